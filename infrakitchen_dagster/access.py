"""Who may do what on a pipeline: roles (the TOML `owners` plus grants stored with
`ik grant`) and the permissions each role carries, as in InfraKitchen.

`ik`, the Dagster assets, the sensors and the Python API all ask `AccessControl`, so one
rule holds on every path.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from sqlalchemy import select

from .store import LifecycleStore
from .store.models import GrantRow, utcnow

# -- roles --------------------------------------------------------------------------------


class Role(StrEnum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"
    OWNER = "owner"

    @property
    def rank(self) -> int:
        return list(Role).index(self)


class Permission(StrEnum):
    VIEW = "view"
    REQUEST = "request"  # provision, update, request a destroy
    APPROVE = "approve"
    DESTROY = "destroy"  # destroy without an approval flow (the reference: admin)
    DELETE = "delete"
    GRANT = "grant"


#: The reference's role table, plus the admin-only actions of its Destroy and Delete steps.
MINIMUM_ROLE: dict[Permission, Role] = {
    Permission.VIEW: Role.READ,
    Permission.REQUEST: Role.WRITE,
    Permission.APPROVE: Role.ADMIN,
    Permission.DESTROY: Role.ADMIN,
    Permission.DELETE: Role.ADMIN,
    Permission.GRANT: Role.ADMIN,
}


class PermissionDenied(Exception):
    """The principal's role on the pipeline does not allow the action."""


class AccessControl:
    """Roles per pipeline: the TOML `owners` plus grants stored with `ik grant`.

    A pipeline with neither is open: everyone acts as admin (what a single engineer on a
    laptop expects). Declaring an owner or granting any role closes it. A pipeline with an
    approval flow must name owners (`ik validate` refuses it otherwise).
    """

    def __init__(self, store: LifecycleStore):
        self.store = store

    def grants(self, pipeline: str) -> dict[str, Role]:
        with self.store.session() as session:
            rows = session.scalars(select(GrantRow).where(GrantRow.pipeline == pipeline))
            return {r.principal: Role(r.role) for r in rows}

    def role(self, pipeline: str, principal: str, owners: Sequence[str] | None
             ) -> Role | None:
        """`owners=None`: the pipeline file is missing or broken, so its owners are unknown;
        then only stored grants count (closed, never open)."""
        grants = self.grants(pipeline)
        if owners and principal in owners:
            return Role.OWNER
        if owners is not None and not owners and not grants:
            return Role.ADMIN
        return grants.get(principal)

    def allows(self, permission: Permission, pipeline: str, principal: str,
               owners: Sequence[str] | None) -> bool:
        role = self.role(pipeline, principal, owners)
        return role is not None and role.rank >= MINIMUM_ROLE[permission].rank

    def require(self, permission: Permission, pipeline: str, principal: str,
                owners: Sequence[str] | None, what: str = "") -> Role:
        role = self.role(pipeline, principal, owners)
        needed = MINIMUM_ROLE[permission]
        if role is None or role.rank < needed.rank:
            self.store.audit(f"{permission.value}_denied", actor=principal, pipeline=pipeline,
                             details={"role": role.value if role else None,
                                      "needs": needed.value, "what": what})
            held = f"has role {role.value}" if role else "has no role"
            raise PermissionDenied(
                f"{principal!r} {held} on pipeline {pipeline!r}; {permission.value}"
                f"{' ' + what if what else ''} needs {needed.value} or above")
        return role

    def grant(self, pipeline: str, principal: str, role: Role, *, actor: str,
              owners: Sequence[str] | None) -> None:
        held = self.require(Permission.GRANT, pipeline, actor, owners, f"of {role.value}")
        if held != Role.OWNER and Role.OWNER in (role, self.grants(pipeline).get(principal)):
            raise PermissionDenied(f"only an owner may grant, change or revoke owner on "
                                   f"{pipeline!r}")
        with self.store.session() as session:
            row = session.get(GrantRow, (pipeline, principal))
            if row is None:
                row = GrantRow(pipeline=pipeline, principal=principal)
                session.add(row)
            row.role, row.granted_by, row.granted_at = role.value, actor, utcnow()
        self.store.audit("grant", actor=actor, pipeline=pipeline,
                         details={"principal": principal, "role": role.value})

    def revoke(self, pipeline: str, principal: str, *, actor: str,
               owners: Sequence[str] | None) -> bool:
        held = self.require(Permission.GRANT, pipeline, actor, owners, "(revoke)")
        if held != Role.OWNER and self.grants(pipeline).get(principal) == Role.OWNER:
            raise PermissionDenied(f"only an owner may grant, change or revoke owner on "
                                   f"{pipeline!r}")
        with self.store.session() as session:
            row = session.get(GrantRow, (pipeline, principal))
            if row is None:
                return False
            session.delete(row)
        self.store.audit("revoke", actor=actor, pipeline=pipeline,
                         details={"principal": principal})
        return True


# -- requests -----------------------------------------------------------------------------
