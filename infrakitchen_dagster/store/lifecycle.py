"""The InfraKitchen state machine: every record change goes through `next_state`.

States and statuses are the reference's; `RULES` is its "State Transitions" sections and
"State Constraints" table in one place, so an illegal move is refused the same way from a
Dagster asset, a sensor, the `ik` CLI or the Python API.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    PROVISION = "provision"
    PROVISIONED = "provisioned"
    DESTROY = "destroy"
    DESTROYED = "destroyed"


class Status(StrEnum):
    READY = "ready"
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    ERROR = "error"
    APPROVAL_PENDING = "approval_pending"
    PENDING = "pending"
    REJECTED = "rejected"
    UNKNOWN = "unknown"


class Action(StrEnum):
    CREATE = "create"
    PROVISION_START = "provision_start"
    PROVISION_SUCCESS = "provision_success"
    PROVISION_FAILURE = "provision_failure"
    UPDATE_START = "update_start"
    UPDATE_SUCCESS = "update_success"
    UPDATE_FAILURE = "update_failure"
    UNCHANGED = "unchanged"
    REQUEST_APPROVAL = "request_approval"
    APPROVE = "approve"
    REJECT = "reject"
    DESTROY_REQUEST = "destroy_request"
    DESTROY_START = "destroy_start"
    DESTROY_SUCCESS = "destroy_success"
    DESTROY_FAILURE = "destroy_failure"
    CANCEL_DESTROY = "cancel_destroy"
    RECREATE = "recreate"
    DELETE = "delete"
    #: the reference allows deleting a resource that was never provisioned
    DELETE_NEVER_PROVISIONED = "delete_never_provisioned"
    MARK_ERROR = "mark_error"


class IllegalTransition(Exception):
    """The record is not in a state this action may start from; nothing was changed."""

    def __init__(self, action: Action, state: str | None, status: str | None, allowed: str):
        self.action, self.state, self.status = action, state, status
        super().__init__(
            f"cannot {action.value.replace('_', ' ')} a resource in state "
            f"{state}/{status} (allowed from: {allowed})"
        )


P, PD, D, DD = State.PROVISION, State.PROVISIONED, State.DESTROY, State.DESTROYED
S = Status
ANY_STATE = (P, PD, D, DD)
_ = None  # "keep the current value"

#: action -> (allowed (state, status) pairs, resulting (state or keep, status or keep))
RULES: dict[Action, tuple[set[tuple[State | None, Status]], tuple[State | None, Status | None]]] = {
    Action.CREATE: ({(None, None)}, (P, S.READY)),  # type: ignore[arg-type]
    # provision, retry and the second half of recreate
    Action.PROVISION_START: (
        {(P, S.READY), (P, S.ERROR), (P, S.QUEUED)}, (P, S.IN_PROGRESS)),
    Action.PROVISION_SUCCESS: ({(P, S.IN_PROGRESS)}, (PD, S.DONE)),
    Action.PROVISION_FAILURE: ({(P, S.IN_PROGRESS)}, (P, S.ERROR)),
    # update (the temporary state is merged when the apply succeeds)
    Action.UPDATE_START: (
        {(PD, S.DONE), (PD, S.ERROR), (PD, S.READY)}, (PD, S.IN_PROGRESS)),
    Action.UPDATE_SUCCESS: ({(PD, S.IN_PROGRESS)}, (PD, S.DONE)),
    Action.UPDATE_FAILURE: ({(PD, S.IN_PROGRESS)}, (PD, S.ERROR)),
    Action.UNCHANGED: ({(PD, S.DONE)}, (PD, S.DONE)),
    # approval gate: same state, status waits for a decision
    Action.REQUEST_APPROVAL: (
        {(P, S.READY), (P, S.ERROR), (P, S.REJECTED), (P, S.APPROVAL_PENDING),
         (PD, S.DONE), (PD, S.ERROR), (PD, S.APPROVAL_PENDING),
         (D, S.READY), (D, S.ERROR), (D, S.APPROVAL_PENDING)},
        (_, S.APPROVAL_PENDING)),
    Action.APPROVE: ({(s, S.APPROVAL_PENDING) for s in (P, PD, D)}, (_, S.READY)),
    Action.REJECT: ({(s, S.APPROVAL_PENDING) for s in (P, PD, D)}, (_, S.REJECTED)),
    # destroy
    Action.DESTROY_REQUEST: ({(PD, S.DONE), (PD, S.ERROR)}, (D, S.READY)),
    Action.DESTROY_START: ({(D, S.READY), (D, S.ERROR)}, (D, S.IN_PROGRESS)),
    Action.DESTROY_SUCCESS: ({(D, S.IN_PROGRESS)}, (DD, S.DONE)),
    Action.DESTROY_FAILURE: ({(D, S.IN_PROGRESS)}, (D, S.ERROR)),
    Action.CANCEL_DESTROY: (
        {(D, S.READY), (D, S.ERROR), (D, S.REJECTED), (D, S.APPROVAL_PENDING)},
        (PD, S.DONE)),
    # recreate from destroyed or rejected; delete from destroyed, or a record whose
    # provision was rejected or withdrawn (`LifecycleStore.delete` also checks that no
    # apply of it ever started: a failed one may have left infrastructure behind)
    Action.RECREATE: ({(DD, S.DONE), (P, S.REJECTED)}, (P, S.READY)),
    Action.DELETE: ({(DD, S.DONE)}, (DD, S.DONE)),
    Action.DELETE_NEVER_PROVISIONED: ({(P, S.REJECTED)}, (_, _)),
    # a run that died mid-operation
    Action.MARK_ERROR: ({(s, S.IN_PROGRESS) for s in ANY_STATE}, (_, S.ERROR)),
}

#: The reference's "State Constraints" table, which RULES must never contradict.
ALLOWED_NEXT_STATES: dict[State, set[State]] = {
    P: {PD, P},
    PD: {PD, D},
    D: {DD, PD},
    DD: {P},
}


class MayHoldInfrastructure(IllegalTransition):
    """A rejected provision whose apply once started (and failed): it may have left
    infrastructure behind, so it is not deleted until that is cleaned."""

    def __init__(self, state: str, status: str, hint: str):
        self.action, self.state, self.status = Action.DELETE_NEVER_PROVISIONED, state, status
        Exception.__init__(self, f"cannot delete a resource in state {state}/{status} whose "
                                 f"apply was started once: it may hold infrastructure; {hint}")


def delete_action(state: str | None, status: str | None) -> Action:
    """The delete rule for a record in (state, status): `DELETE` from destroyed,
    `DELETE_NEVER_PROVISIONED` from a rejected or withdrawn provision. Anything else is an
    `IllegalTransition` naming both."""
    for action in (Action.DELETE, Action.DELETE_NEVER_PROVISIONED):
        if can(action, state, status):
            return action
    raise IllegalTransition(Action.DELETE, state, status,
                            "destroyed/done, or provision/rejected never applied")


def deletable(state: str | None, status: str | None) -> bool:
    """Whether a record in (state, status) may be deleted by the state table (the store
    checks the history of a never-provisioned one too)."""
    return can(Action.DELETE, state, status) or can(Action.DELETE_NEVER_PROVISIONED,
                                                    state, status)


def can(action: Action, state: str | None, status: str | None) -> bool:
    """Whether `action` may start from (state, status)."""
    try:
        next_state(action, state, status)
    except IllegalTransition:
        return False
    return True


def next_state(
    action: Action, state: str | None, status: str | None
) -> tuple[State, Status]:
    """The (state, status) after `action`, or `IllegalTransition`."""
    allowed, (to_state, to_status) = RULES[action]
    current = (State(state) if state else None, Status(status) if status else None)
    if current not in allowed:
        listing = ", ".join(sorted(f"{a}/{b}" for a, b in allowed if a))
        raise IllegalTransition(action, state, status, listing or "no record")
    new_state = to_state or current[0]
    new_status = to_status or current[1]
    assert new_state is not None and new_status is not None
    return State(new_state), Status(new_status)
