"""The cluster state's pure functions (zkv/node/ownership.py, issue 11): staging, commit,
finalize, the plan, per-N transfers (issue 15) and replacement by placement token."""

from __future__ import annotations

import msgspec
import pytest

from zkv.node import ownership as own

Q = 256


def _state(n: int = 5) -> own.ClusterState:
    return own.founding("n1", "r1", [(f"n{i}", f"r{i % 3}") for i in range(2, n + 1)])


def _settled(st: own.ClusterState) -> own.ClusterState:
    return own.finalize(st, "n1", 1000)


def test_replace_moves_exactly_the_old_nodes_share():
    st = _state()
    st = own.stage(st, "replace", "n2", "n9", known={"n9"}, n=3)
    st = own.commit(st, "n1", {"n9": "r2"})  # the same rack as n2
    assert st.status("n2") == own.LEAVING and st.status("n9") == own.JOINING
    assert st.token("n9") == "n2"
    rings = own.Rings(st, Q, 3)
    gained = {p for p, r, _ in rings.transfers()}
    assert {r for _, r, _ in rings.transfers()} == {"n9"}
    assert gained == set(rings.current.replicas_of("n2"))  # exactly n2's partitions move
    for p in range(Q):  # n9 is where n2 was, in every preference list
        assert rings.next.preflist(p) == tuple("n9" if x == "n2" else x
                                               for x in rings.current.preflist(p))
    for _p, _, sources in rings.transfers():
        assert sources[0] == "n2"  # streamed from the node it replaces first
    plan = own.plan(st, Q, 3)
    assert plan["moved_fraction"] == round(len(rings.current.owned("n2")) / Q, 4)
    done = _settled(st)
    assert "n2" not in done.members and done.token("n9") == "n2"
    after = own.Rings(done, Q, 3)
    assert not after.moving and after.current.replicas_of("n9") == rings.current.replicas_of("n2")


def test_a_replace_that_is_a_leave_below_n_is_refused_as_the_leave_is():
    """`replace c c` and `replace c b` (b valid already) were taken on a 3-node N=3 cluster
    (the leave's member-count guard skipped): c left and every key kept 2 replicas."""
    st = _state(3)
    with pytest.raises(own.ChangeError, match="n3 cannot replace itself"):
        own.stage(st, "replace", "n3", "n3", known={"n3"}, n=3)
    with pytest.raises(own.ChangeError, match="would keep 2 member.* for N=3"):
        own.stage(st, "replace", "n3", "n2", known={"n2"}, n=3)
    with pytest.raises(own.ChangeError, match="would keep 2 member.* for N=3"):
        own.stage(st, "leave", "n3", n=3)
    # a new node takes the place: the count stays; on 4 members, a valid one may take it
    assert own.stage(st, "replace", "n3", "n9", known={"n9"}, n=3).staged == [
        ("replace", "n3", "n9")]
    assert own.stage(_state(4), "replace", "n4", "n2", known={"n2"}, n=3).staged == [
        ("replace", "n4", "n2")]


def test_replace_of_a_node_already_joining_re_places_it():
    """With auto-commit the new node has joined under its own token before the operator
    runs replace: it is re-placed at the old node's place, so only the old share moves."""
    st = own.commit(own.stage(_state(), "join", "n9", known={"n9"}), "n1", {"n9": "r2"})
    joining = own.Rings(st, Q, 3)
    assert joining.transfers()  # it was receiving its own share
    st = own.commit(own.stage(st, "replace", "n2", "n9", known={"n9"}, n=3), "n1", {})
    rings = own.Rings(st, Q, 3)
    assert {p for p, _, _ in rings.transfers()} == set(rings.current.replicas_of("n2"))
    leave_then_join = own.Rings(own.commit(own.stage(joining.state, "leave", "n2", n=3), "n1",
                                           {}), Q, 3)
    assert len(leave_then_join.transfers()) > len(rings.transfers())


def test_replace_after_auto_join_staged_with_auto_commit_off():
    st = own.set_auto_commit(_state(), "n1", False)
    st = own.stage(st, "join", "n9", known={"n9"})  # what the claimant stages by itself
    st = own.stage(st, "replace", "n2", "n9", known={"n9"}, n=3)
    assert st.staged == [("replace", "n2", "n9")]
    plan = own.plan(st, Q, 3, known_racks={"n9": "r2"})  # what `zkv cluster plan` shows
    cur = own.Rings(st, Q, 3).current
    assert {t["to"] for t in plan["transfers"]} == {"n9"}
    assert sum(t["partitions"] for t in plan["transfers"]) == len(cur.replicas_of("n2"))
    st = own.commit(st, "n1", {"n9": "r2"})
    assert st.token("n9") == "n2"


def test_a_replaced_id_that_joins_again_gets_its_own_token():
    st = _settled(own.commit(own.stage(_state(), "replace", "n2", "n9", known={"n9"}, n=3),
                             "n1", {"n9": "r2"}))
    st = own.commit(own.stage(st, "join", "n2", known={"n2"}), "n1", {"n2": "r2"})
    assert st.token("n2") != "n2" and st.token("n2") != st.token("n9")
    assert own.validate(st) is None
    own.Rings(st, Q, 3)  # builds: distinct tokens


def test_states_without_tokens_still_decode():
    class Old(msgspec.Struct, array_like=True):  # the format before tokens
        epoch: int
        author: str
        members: dict[str, tuple[str, str]]
        staged: list[tuple[str, str, str]] = []
        auto_commit: bool = True
        gone: dict[str, int] = {}

    data = msgspec.msgpack.encode(Old(3, "n1", {"n1": ("valid", "r1"), "n2": ("valid", "r2")}))
    st = own.decode(data)
    assert st.tokens == {} and st.token("n2") == "n2"
    bad = _state()
    bad.tokens = {"n3": "n2"}  # n3 placed where n2 is
    with pytest.raises(ValueError, match="share a placement token"):
        own.decode(own.encode(bad))


def test_plan_lists_transfers_per_n():
    st = own.stage(_state(), "join", "n9", known={"n9"})
    plan = own.plan(st, Q, 3, others=[1, 2])
    by_n = {t["n"] for t in plan["transfers"]}
    assert by_n == {1, 2, 3}
    for gn in (1, 2, 3):
        rings = own.Rings(own.commit(st, "n1", {}), Q, gn)
        assert sum(t["partitions"] for t in plan["transfers"] if t["n"] == gn) == len(
            rings.transfers())


@pytest.mark.parametrize("action,other", [("leave", ""), ("replace", "n9"),
                                          ("force-remove", "")])
def test_fate_of_an_operators_change(action, other):
    """ownership.fate: CARRIED while a state holds the change (staged, or committed and
    moving), DONE once the node is no longer a member, LOST in a state without it."""
    base = _state()
    racks = {"n9": "r2"}
    staged = own.stage(base, action, "n2", other, known={"n9"}, down={"n2"}, n=3)
    assert own.fate(staged, action, "n2", other) == own.CARRIED
    moving = own.commit(staged, "n1", racks)
    assert own.fate(moving, action, "n2", other) == own.CARRIED
    assert own.fate(_settled(moving), action, "n2", other) == own.DONE
    assert own.fate(base, action, "n2", other) == own.LOST  # (the state that won lacks it)
    lost = own.commit(own.stage(base, "replace", "n3", "n8", known={"n8"}, n=3), "n5", racks)
    assert own.fate(lost, action, "n2", other) == own.LOST


@pytest.mark.parametrize("action,other", [("leave", ""), ("replace", "n9"),
                                          ("force-remove", ""), ("join", "")])
def test_fate_of_a_committed_change(action, other):
    """A change of a commit is CARRIED only once committed: staged again in a state that
    lost the commit (the claimant stages a join by itself; an operator staged the rest again,
    auto-commit off), it waits for a commit that may never come, so it is LOST. A committed
    join is DONE once the node is a member, joining or valid."""
    base = _state()
    node = "n8" if action == "join" else "n2"
    staged = own.stage(base, action, node, other, known={"n8", "n9"}, down={"n2"}, n=3)
    assert own.fate(staged, action, node, other, committed=True) == own.LOST
    assert own.fate(base, action, node, other, committed=True) == own.LOST
    moving = own.commit(staged, "n1", {"n8": "r1", "n9": "r2"})
    assert own.fate(moving, action, node, other, committed=True) == (
        own.DONE if action == "join" else own.CARRIED)
    assert own.fate(_settled(moving), action, node, other, committed=True) == own.DONE


def test_a_commit_of_one_nodes_change_leaves_the_others_staged():
    """commit(only=node): the changes naming that node, as a lost commit is made again; the
    rest stay staged for the operator's own commit."""
    base = _state()
    staged = own.stage(own.stage(base, "join", "n8", known={"n8"}, n=3), "leave", "n2", n=3)
    out = own.commit(staged, "n1", {"n8": "r1"}, "n2")
    assert out.status("n2") == own.LEAVING and out.status("n8") is None
    assert out.staged == [("join", "n8", "")] and out.epoch == base.epoch + 1
    with pytest.raises(own.ChangeError, match="nothing staged for n3"):
        own.commit(staged, "n1", {}, "n3")
    assert own.commit(staged, "n1", {"n8": "r1"}).staged == []


def test_fate_of_a_force_remove_is_not_carried_by_a_leave():
    """A node leaving still moves its data off itself; a force-remove of it was not made
    (lost) until it is removed. A leave, by contrast, is carried by a replace of the node."""
    base = _state()
    leaving = own.commit(own.stage(base, "leave", "n2", n=3), "n1", {})
    assert own.fate(leaving, "force-remove", "n2") == own.LOST
    replaced = own.commit(own.stage(base, "replace", "n2", "n9", known={"n9"}, n=3), "n1",
                          {"n9": "r2"})
    assert own.fate(replaced, "leave", "n2") == own.CARRIED


def test_a_joining_node_force_removed_is_gone_and_not_staged_again():
    """A joiner that died (or never could complete its join) is force-removed: gone as of
    the commit, so its record, still in the member tables while it is down, is not staged
    to join again at the next claimant's start; a later incarnation (started again) is."""
    st = own.commit(own.stage(_state(), "join", "n9", known={"n9"}), "n1", {"n9": "r2"},
                    now_ms=500)
    assert st.status("n9") == own.JOINING and "n9" not in st.gone
    st = own.stage(st, "force-remove", "n9", down={"n9"}, n=3)
    st = own.commit(st, "n1", {}, now_ms=2000)
    assert st.status("n9") is None and st.gone["n9"] == 2000
    assert own.joinable(st, [("n9", 1500)]) == []  # the same life: not again
    assert own.joinable(st, [("n9", 2500)]) == ["n9"]  # started again since
