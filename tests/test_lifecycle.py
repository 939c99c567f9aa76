"""The InfraKitchen state machine (`store/lifecycle.py`) and the store that applies it.

The "State Constraints" table of `reference/infrakitchen-resource-workflows.txt`:

| Current State | Allowed Next States            | Available Actions          |
|---------------|--------------------------------|----------------------------|
| provision     | provisioned, provision         | Provision, Retry, Recreate |
| provisioned   | provisioned, destroy           | Update, Destroy            |
| destroy       | destroyed, provisioned         | Execute, Cancel            |
| destroyed     | provision, (none - for delete) | Recreate, Delete           |
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from infrakitchen_dagster.store import LifecycleStore
from infrakitchen_dagster.store.lifecycle import (
    ALLOWED_NEXT_STATES,
    RULES,
    Action,
    IllegalTransition,
    State,
    Status,
    next_state,
)

P, PD, D, DD = State.PROVISION, State.PROVISIONED, State.DESTROY, State.DESTROYED
REFERENCE = (Path(__file__).resolve().parents[2] / "shared/reference"
             / "infrakitchen-resource-workflows.txt")

#: The table above, as data.
TABLE: dict[State, set[State]] = {P: {PD, P}, PD: {PD, D}, D: {DD, PD}, DD: {P}}

#: Per row, the table's "Available Actions" as concrete moves allowed from that state:
#: (action, from status, expected (state, status) after).
AVAILABLE: dict[State, list[tuple[str, Action, Status, tuple[State, Status]]]] = {
    P: [
        ("provision", Action.PROVISION_START, Status.READY, (P, Status.IN_PROGRESS)),
        ("provision: success", Action.PROVISION_SUCCESS, Status.IN_PROGRESS,
         (PD, Status.DONE)),
        ("provision: failure", Action.PROVISION_FAILURE, Status.IN_PROGRESS,
         (P, Status.ERROR)),
        ("retry", Action.PROVISION_START, Status.ERROR, (P, Status.IN_PROGRESS)),
        ("recreate after rejection", Action.RECREATE, Status.REJECTED, (P, Status.READY)),
    ],
    PD: [
        ("update", Action.UPDATE_START, Status.DONE, (PD, Status.IN_PROGRESS)),
        ("update: success", Action.UPDATE_SUCCESS, Status.IN_PROGRESS, (PD, Status.DONE)),
        ("update: failure", Action.UPDATE_FAILURE, Status.IN_PROGRESS, (PD, Status.ERROR)),
        ("update after error", Action.UPDATE_START, Status.ERROR, (PD, Status.IN_PROGRESS)),
        ("destroy", Action.DESTROY_REQUEST, Status.DONE, (D, Status.READY)),
    ],
    D: [
        ("execute", Action.DESTROY_START, Status.READY, (D, Status.IN_PROGRESS)),
        ("execute: success", Action.DESTROY_SUCCESS, Status.IN_PROGRESS, (DD, Status.DONE)),
        ("execute: failure", Action.DESTROY_FAILURE, Status.IN_PROGRESS, (D, Status.ERROR)),
        ("execute again after error", Action.DESTROY_START, Status.ERROR,
         (D, Status.IN_PROGRESS)),
        ("cancel", Action.CANCEL_DESTROY, Status.READY, (PD, Status.DONE)),
        ("cancel after rejection", Action.CANCEL_DESTROY, Status.REJECTED, (PD, Status.DONE)),
    ],
    DD: [
        ("recreate", Action.RECREATE, Status.DONE, (P, Status.READY)),
        ("delete", Action.DELETE, Status.DONE, (DD, Status.DONE)),
    ],
}

#: Per row, actions of the other rows that must be refused from that state, whatever the
#: status (they would lead to a state the table does not allow, or skip a step).
UNAVAILABLE: dict[State, list[Action]] = {
    P: [Action.UPDATE_START, Action.UPDATE_SUCCESS, Action.DESTROY_REQUEST,
        Action.DESTROY_START, Action.DESTROY_SUCCESS, Action.DESTROY_FAILURE,
        Action.CANCEL_DESTROY, Action.DELETE, Action.UNCHANGED],
    PD: [Action.PROVISION_START, Action.PROVISION_SUCCESS, Action.PROVISION_FAILURE,
         Action.RECREATE, Action.DESTROY_START, Action.DESTROY_SUCCESS,
         Action.CANCEL_DESTROY, Action.DELETE, Action.CREATE],
    D: [Action.PROVISION_START, Action.PROVISION_SUCCESS, Action.RECREATE,
        Action.UPDATE_START, Action.UPDATE_SUCCESS, Action.DESTROY_REQUEST, Action.DELETE,
        Action.UNCHANGED, Action.CREATE],
    DD: [Action.PROVISION_START, Action.PROVISION_SUCCESS, Action.UPDATE_START,
         Action.UPDATE_SUCCESS, Action.UNCHANGED, Action.DESTROY_REQUEST,
         Action.DESTROY_START, Action.DESTROY_SUCCESS, Action.CANCEL_DESTROY,
         Action.REQUEST_APPROVAL, Action.APPROVE, Action.REJECT, Action.CREATE],
}


def _row_id(item) -> str:
    return item[0] if isinstance(item, tuple) else str(item)


# ---------------------------------------------------------------------------------------
# the table itself


def test_allowed_next_states_is_the_reference_table():
    assert ALLOWED_NEXT_STATES == TABLE


@pytest.mark.skipif(not REFERENCE.is_file(), reason=f"reference not found at {REFERENCE}")
def test_table_copy_matches_the_reference_file():
    text = REFERENCE.read_text(encoding="utf-8")
    section = text[text.index("State Constraints"):]
    rows = re.findall(r"^\| (provision|provisioned|destroy|destroyed) \| ([^|]+) \|$",
                      section, re.MULTILINE)
    names = {s.value for s in State}
    parsed = {
        State(current): {State(w) for w in re.findall(r"[a-z]+", nxt) if w in names}
        for current, nxt in rows
    }
    assert len(rows) == 4
    assert parsed == TABLE


# ---------------------------------------------------------------------------------------
# every row: allowed moves


@pytest.mark.parametrize(
    "state,label,action,status,expected",
    [(s, *move) for s, moves in AVAILABLE.items() for move in moves],
    ids=[f"{s.value}:{m[0]}" for s, moves in AVAILABLE.items() for m in moves],
)
def test_row_allows(state, label, action, status, expected):
    assert next_state(action, state.value, status.value) == expected
    assert expected[0] == state or expected[0] in ALLOWED_NEXT_STATES[state]


@pytest.mark.parametrize("state", list(TABLE), ids=[s.value for s in TABLE])
def test_row_reaches_every_allowed_next_state(state):
    reached = {after[0] for _, _, _, after in AVAILABLE[state]}
    assert TABLE[state] <= reached | {state}
    for _, action, status, after in AVAILABLE[state]:
        assert next_state(action, state, status) == after


# ---------------------------------------------------------------------------------------
# every row: refused moves


@pytest.mark.parametrize(
    "state,action",
    [(s, a) for s, actions in UNAVAILABLE.items() for a in actions],
    ids=[f"{s.value}:{a.value}" for s, actions in UNAVAILABLE.items() for a in actions],
)
def test_row_refuses(state, action):
    for status in Status:
        with pytest.raises(IllegalTransition) as info:
            next_state(action, state.value, status.value)
        assert info.value.action == action
        assert info.value.state == state.value
        assert info.value.status == status.value


@pytest.mark.parametrize("state", list(State), ids=[s.value for s in State])
def test_no_action_leads_to_a_forbidden_state(state):
    """Exhaustively: from any (state, status), whatever succeeds stays within the table."""
    for action in Action:
        for status in Status:
            try:
                after, _ = next_state(action, state.value, status.value)
            except IllegalTransition:
                continue
            assert after == state or after in ALLOWED_NEXT_STATES[state], (
                f"{action.value} from {state.value}/{status.value} leads to {after.value}")


def test_no_rule_contradicts_the_table():
    """Every allowed from-pair of every rule leads to a state the table allows.

    A status-only change (the state stays, e.g. destroy/ready -> destroy/in_progress, which the
    reference's own Destroy step describes) is not a state transition of the table.
    """
    assert set(RULES) == set(Action)
    for action, (allowed, (to_state, _to_status)) in RULES.items():
        for from_state, from_status in allowed:
            if from_state is None:
                assert action == Action.CREATE
                continue
            after = to_state or from_state
            assert after == from_state or after in ALLOWED_NEXT_STATES[from_state], (
                f"{action.value} from {from_state}/{from_status} leads to {after}")
            # and next_state agrees with the rule
            assert next_state(action, from_state, from_status)[0] == after


def test_delete_only_from_destroyed():
    for state in State:
        for status in Status:
            if (state, status) == (DD, Status.DONE):
                assert next_state(Action.DELETE, state, status) == (DD, Status.DONE)
            else:
                with pytest.raises(IllegalTransition):
                    next_state(Action.DELETE, state, status)


def test_create_only_without_a_record():
    assert next_state(Action.CREATE, None, None) == (P, Status.READY)
    for state in State:
        with pytest.raises(IllegalTransition):
            next_state(Action.CREATE, state, Status.READY)
    with pytest.raises(IllegalTransition, match="provision"):
        next_state(Action.PROVISION_START, None, None)


def test_illegal_transition_message_is_clear():
    with pytest.raises(IllegalTransition) as info:
        next_state(Action.DESTROY_REQUEST, "provision", "ready")
    message = str(info.value)
    assert "destroy request" in message
    assert "provision/ready" in message
    assert "provisioned/done" in message  # where it is allowed from


def test_approval_gate():
    assert next_state(Action.REQUEST_APPROVAL, P, Status.READY) == (P, Status.APPROVAL_PENDING)
    assert next_state(Action.APPROVE, P, Status.APPROVAL_PENDING) == (P, Status.READY)
    assert next_state(Action.REJECT, P, Status.APPROVAL_PENDING) == (P, Status.REJECTED)
    assert next_state(Action.REQUEST_APPROVAL, D, Status.READY) == (D, Status.APPROVAL_PENDING)
    assert next_state(Action.REJECT, D, Status.APPROVAL_PENDING) == (D, Status.REJECTED)
    for action in (Action.APPROVE, Action.REJECT):
        for status in Status:
            if status != Status.APPROVAL_PENDING:
                with pytest.raises(IllegalTransition):
                    next_state(action, P, status)
    # no provisioning while the request is pending
    with pytest.raises(IllegalTransition):
        next_state(Action.PROVISION_START, P, Status.APPROVAL_PENDING)
    with pytest.raises(IllegalTransition):
        next_state(Action.DESTROY_START, D, Status.APPROVAL_PENDING)


def test_mark_error_keeps_state():
    for state in State:
        assert next_state(Action.MARK_ERROR, state, Status.IN_PROGRESS) == (state, Status.ERROR)
        with pytest.raises(IllegalTransition):
            next_state(Action.MARK_ERROR, state, Status.DONE)


# ---------------------------------------------------------------------------------------
# the store


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> LifecycleStore:
    """The same store tests on SQLite and on PostgreSQL (a fresh database each)."""
    if request.param == "postgres":
        return LifecycleStore(request.getfixturevalue("postgres_database"))
    return LifecycleStore(f"sqlite:///{tmp_path}/s.db")


def _create(store: LifecycleStore):
    return store.create("stack", "network", "default", kind="resource",
                        module="modules/network", parents=[], actor="alice", run_id="run-1")


def _key(record) -> tuple:
    return (record.id, record.state, record.status, record.revision, record.outputs)


def _walk(store, record, *actions: Action):
    for action in actions:
        record = store.transition(record, action, actor="alice", run_id="run-2")
    return record


def test_store_create_and_provision(store):
    record = _create(store)
    assert (record.state, record.status, record.revision) == ("provision", "ready", 1)
    assert _create(store).id == record.id  # create is idempotent
    record = _walk(store, record, Action.PROVISION_START)
    assert (record.state, record.status) == ("provision", "in_progress")
    record = store.transition(record, Action.PROVISION_SUCCESS, actor="alice",
                              run_id="run-2", outputs={"id": "net-1"})
    stored = store.get("stack", "network", "default")
    assert (stored.state, stored.status) == ("provisioned", "done")
    assert stored.outputs == {"id": "net-1"}
    assert stored.last_run_id == "run-2"
    actions = [e["action"] for e in store.audit_entries("stack", "network")]
    assert actions == ["create", "provision_start", "provision_success"]


def test_store_refused_transition_changes_nothing(store):
    record = _walk(store, _create(store), Action.PROVISION_START, Action.PROVISION_SUCCESS)
    before = store.get("stack", "network", "default")
    revisions_before = store.revisions(before)

    with pytest.raises(IllegalTransition):
        store.transition(before, Action.RECREATE, actor="mallory", run_id="run-3",
                         bump_revision=True, outputs={}, error="boom")

    after = store.get("stack", "network", "default")
    assert after == before
    assert store.revisions(after) == revisions_before
    refused = [e for e in store.audit_entries("stack", "network")
               if e["action"].endswith("_refused")]
    assert len(refused) == 1
    assert refused[0]["action"] == "recreate_refused"
    assert refused[0]["actor"] == "mallory"
    assert refused[0]["archived"] is False
    assert record.id == after.id


def test_store_delete_only_from_destroyed(store):
    record = _walk(store, _create(store), Action.PROVISION_START, Action.PROVISION_SUCCESS)
    with pytest.raises(IllegalTransition):
        store.delete(record, actor="alice")
    assert _key(store.get("stack", "network", "default")) == _key(record)

    record = _walk(store, record, Action.DESTROY_REQUEST)
    with pytest.raises(IllegalTransition):
        store.delete(record, actor="alice")
    assert _key(store.get("stack", "network", "default")) == _key(record)

    record = _walk(store, record, Action.DESTROY_START, Action.DESTROY_SUCCESS)
    assert (record.state, record.status) == ("destroyed", "done")
    entries_before = store.audit_entries("stack", "network")
    assert entries_before and not any(e["archived"] for e in entries_before)

    store.delete(record, actor="alice")

    assert store.get("stack", "network", "default") is None
    entries = store.audit_entries("stack", "network")
    assert len(entries) == len(entries_before) + 1
    assert all(e["archived"] is True for e in entries)
    assert [e["action"] for e in entries][-1] == "delete"
    assert [e["action"] for e in entries][:len(entries_before)] == [
        e["action"] for e in entries_before]
    assert store.audit_entries("stack", "network", include_archived=False) == []
    assert store.revisions(record) == []


def test_store_recreate_after_destroy(store):
    record = _walk(store, _create(store), Action.PROVISION_START, Action.PROVISION_SUCCESS,
                   Action.DESTROY_REQUEST, Action.DESTROY_START, Action.DESTROY_SUCCESS)
    record = store.transition(record, Action.RECREATE, actor="alice", bump_revision=True)
    assert (record.state, record.status, record.revision) == ("provision", "ready", 2)


# ---------------------------------------------------------------------------------------
# every row of the table again, through the store, on SQLite and on PostgreSQL


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def row_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """One store per backend for the row tests; each test uses a record of its own."""
    if request.param == "sqlite":
        yield LifecycleStore(f"sqlite:///{tmp_path_factory.mktemp('rows')}/rows.db")
        return
    request.getfixturevalue("postgres_available")
    import uuid

    from .conftest import PG_HOST, PG_PORT, _pg_admin

    name = f"ik_rows_{uuid.uuid4().hex[:10]}"
    admin = _pg_admin()
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    store = LifecycleStore(f"postgresql+psycopg2://postgres@{PG_HOST}:{PG_PORT}/{name}")
    try:
        yield store
    finally:
        store.engine.dispose()
        from infrakitchen_dagster.store import _engines

        _engines.pop(store.url, None)
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


NATURAL_STATUS = {P: Status.READY, PD: Status.DONE, D: Status.READY, DD: Status.DONE}


def _record_at(store: LifecycleStore, state: State, status: Status):
    """A fresh record put straight into (state, status): the set-up, not the subject."""
    import uuid

    from infrakitchen_dagster.store.models import ResourceRecord

    record = store.create("rows", f"t-{uuid.uuid4().hex[:8]}", "default", kind="resource",
                          module="m", parents=[], actor="alice")
    with store.session() as session:
        row = session.get(ResourceRecord, record.id)
        row.state, row.status = state.value, status.value
    return store.get(record.pipeline, record.task, record.environment)


@pytest.mark.parametrize(
    "state,label,action,status,expected",
    [(s, *move) for s, moves in AVAILABLE.items() for move in moves],
    ids=[f"{s.value}:{m[0]}" for s, moves in AVAILABLE.items() for m in moves],
)
def test_store_row_allows(row_store, state, label, action, status, expected):
    record = _record_at(row_store, state, status)
    after = row_store.transition(record, action, actor="alice", run_id="r")
    assert (after.state, after.status) == (expected[0].value, expected[1].value)
    assert row_store.audit_entries("rows", record.task)[-1]["action"] == action.value


@pytest.mark.parametrize(
    "state,action",
    [(s, a) for s, actions in UNAVAILABLE.items() for a in actions],
    ids=[f"{s.value}:{a.value}" for s, actions in UNAVAILABLE.items() for a in actions],
)
def test_store_row_refuses(row_store, state, action):
    record = _record_at(row_store, state, NATURAL_STATUS[state])
    with pytest.raises(IllegalTransition):
        row_store.transition(record, action, actor="mallory", run_id="r")
    after = row_store.get(record.pipeline, record.task, record.environment)
    assert _key(after) == _key(record) and after.updated_at == record.updated_at
    last = row_store.audit_entries("rows", record.task)[-1]
    assert (last["action"], last["actor"]) == (f"{action.value}_refused", "mallory")


@pytest.mark.postgres
def test_a_plain_postgresql_url_works(postgres_database: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`postgresql://...` as people write it (SQLAlchemy alone would want psycopg 3)."""
    plain = postgres_database.replace("postgresql+psycopg2://", "postgresql://")
    monkeypatch.setenv("INFRAKITCHEN_DATABASE_URL", plain)
    store = LifecycleStore()
    assert store.url.startswith("postgresql+psycopg2://")
    created = store.create("p", "t", "default", kind="resource", module=None, parents=[],
                           actor="tester")
    assert store.get("p", "t", "default") == created
