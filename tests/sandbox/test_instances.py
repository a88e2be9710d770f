"""Warm instances: reuse for one key, fresh globals per run, per-run limits, and every reason to recycle one."""

from __future__ import annotations

import collections
import concurrent.futures
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

from sandbox import Limits, Sandbox
from sandbox.instance import HOST_WAIT_GRACE_SECONDS, InstancePolicy, InstancePool, Placement, PoolKey
from sandbox.result import RunResult
from tests.sandbox.hooks import ENVIRONMENT
from tests.sandbox.instance_checks import LIMITS, gone, run_pid

POLICY = InstancePolicy(max_runs=3, idle_seconds=1.0, max_instances=4)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """One sandbox (with the test hooks) whose instances serve at most 3 runs and live 1 s idle."""
    with Sandbox(environment=ENVIRONMENT, instances=POLICY) as sandbox:
        yield sandbox


def test_consecutive_runs_of_one_key_share_a_process(sandbox: Sandbox) -> None:
    """Runs of one key reuse its instance; runs without a key still get a fresh process each."""
    key = ("tenant-a", "reuse", 1)

    first, second = run_pid(sandbox, key), run_pid(sandbox, key)
    plain = [sandbox.run("return pid()", limits=LIMITS).value for _ in range(2)]

    assert first == second
    assert plain[0] != plain[1]
    assert first not in plain


def test_each_run_gets_fresh_globals_and_environment(sandbox: Sandbox) -> None:
    """A global set and an environment object mutated by one run are not seen by the instance's next run."""
    key = ("tenant-a", "fresh", 1)
    setter = "global counter\ncounter = 41\nbox['seen'] = True\nreturn pid()"
    reader = (
        "try:\n    found = counter\nexcept NameError:\n    found = None\nreturn {'pid': pid(), 'counter': found, "
        "'box': dict(box)}"
    )

    pid = sandbox.run(setter, instance_key=key, limits=LIMITS).value
    second = sandbox.run(reader, instance_key=key, limits=LIMITS).value

    assert second == {"pid": pid, "counter": None, "box": {}}


@pytest.mark.parametrize(
    "other",
    [("tenant-b", "script", 1), ("tenant-a", "other-script", 1), ("tenant-a", "script", 2)],
    ids=["tenant", "script", "version"],
)
def test_instances_are_never_shared_across_keys(sandbox: Sandbox, other: tuple[str, str, int]) -> None:
    """Another tenant, script or source version gets a process of its own."""
    mine = ("tenant-a", "script", 1, repr(other))  # the last item keeps each case's instances apart
    mine_pid = run_pid(sandbox, mine)

    assert run_pid(sandbox, (*other, repr(other))) != mine_pid
    assert run_pid(sandbox, mine) == mine_pid


def test_other_limits_get_another_instance(sandbox: Sandbox) -> None:
    """The first order's rlimits hold for an instance's life, so other limits never reuse it."""
    key = ("tenant-a", "limits", 1)

    assert run_pid(sandbox, key) != run_pid(sandbox, key, LIMITS.replace(memory_bytes=128 << 20))


def test_recycled_after_max_runs(sandbox: Sandbox) -> None:
    """An instance serves max_runs runs, then a new process takes over and the old one is killed."""
    key = ("tenant-a", "max-runs", 1)

    pids = [run_pid(sandbox, key) for _ in range(POLICY.max_runs + 1)]

    assert len(set(pids[: POLICY.max_runs])) == 1
    assert pids[-1] != pids[0]
    assert gone(pids[0])


def test_recycled_when_idle(sandbox: Sandbox) -> None:
    """An instance without a run for idle_seconds is killed; the key's next run starts a new one."""
    key = ("tenant-a", "idle", 1)
    pid = run_pid(sandbox, key)

    assert gone(pid, POLICY.idle_seconds + 3)
    assert run_pid(sandbox, key) != pid


def test_recycled_after_a_crash(sandbox: Sandbox) -> None:
    """A run that kills its process is reported as usual, and the key's next run gets a new process."""
    key = ("tenant-a", "crash", 1)
    pid = run_pid(sandbox, key)

    crashed = sandbox.run("crash()", instance_key=key, limits=LIMITS)

    assert crashed.error is not None
    assert crashed.error.type == "SnippetCrashedError"
    assert run_pid(sandbox, key) != pid


def test_snippet_exception_keeps_the_instance(sandbox: Sandbox) -> None:
    """The snippet's own exception is data: the instance serves the next run."""
    key = ("tenant-a", "raises", 1)
    pid = run_pid(sandbox, key)

    failed = sandbox.run("raise ValueError('no')", instance_key=key, limits=LIMITS)

    assert failed.error is not None
    assert failed.error.type == "SnippetError"
    assert run_pid(sandbox, key) == pid


def test_cpu_limit_is_per_run_and_a_breach_recycles(sandbox: Sandbox) -> None:
    """Runs that each stay under the CPU limit pass even when together they exceed it; one over it is stopped."""
    limits = Limits(wall_seconds=20, cpu_seconds=2)
    key = ("tenant-a", "cpu", 1)
    # 1.2 s of this process's CPU per run: under the 2 s limit each time, over it after two runs together.
    burn = "import time\nstart = time.process_time()\nwhile time.process_time() - start < 1.2:\n    pass\nreturn pid()"
    pids = [sandbox.run(burn, instance_key=key, limits=limits) for _ in range(3)]
    used = psutil.Process(pids[0].value).cpu_times()

    assert used.user + used.system > limits.cpu_seconds  # together over the limit, each run under it
    assert all(result.ok for result in pids), [result.error for result in pids]
    assert len({result.value for result in pids}) == 1

    over = sandbox.run("while True:\n    pass", instance_key=key, limits=limits)

    assert over.error is not None
    assert over.error.type == "TimeLimitExceededError"
    assert "CPU" in over.error.message
    assert run_pid(sandbox, key, limits) != pids[0].value


def test_wall_limit_kills_and_recycles(sandbox: Sandbox) -> None:
    """A run over its wall-clock limit is stopped, and its instance is killed."""
    limits = Limits(wall_seconds=0.5, cpu_seconds=5)
    key = ("tenant-a", "wall", 1)
    pid = run_pid(sandbox, key, limits)

    over = sandbox.run("while True:\n    pass", instance_key=key, limits=limits)

    assert over.error is not None
    assert over.error.type == "TimeLimitExceededError"
    assert "wall-clock" in over.error.message
    assert gone(pid)
    assert run_pid(sandbox, key, limits) != pid


def test_output_limit_holds_and_recycles(sandbox: Sandbox) -> None:
    """An instance's run over its output cap fails as in a fresh child, and the instance is recycled."""
    limits = LIMITS.replace(output_bytes=1000)
    key = ("tenant-a", "output", 1)
    pid = run_pid(sandbox, key, limits)

    over = sandbox.run("print('x' * 5000)\nreturn pid()", instance_key=key, limits=limits)

    assert over.error is not None
    assert over.error.type == "OutputLimitExceededError"
    assert run_pid(sandbox, key, limits) != pid


def test_memory_high_water_recycles() -> None:
    """An instance whose resident memory grew past the high-water mark is recycled after its run."""
    policy = InstancePolicy(memory_high_water_bytes=16 << 20)
    with Sandbox(environment=ENVIRONMENT, instances=policy) as sandbox:
        key = ("tenant-a", "memory", 1)
        pid = run_pid(sandbox, key)

        grown = sandbox.run("hog(32)\nreturn pid()", instance_key=key, limits=LIMITS)

        assert (grown.ok, grown.value) == (True, pid)
        assert gone(pid)
        assert run_pid(sandbox, key) != pid


def test_live_instances_are_bounded_least_recently_used_first() -> None:
    """With max_instances live, a new key evicts the least recently used idle instance."""
    with Sandbox(environment=ENVIRONMENT, instances=InstancePolicy(max_instances=2)) as sandbox:
        first, second = run_pid(sandbox, "first"), run_pid(sandbox, "second")
        assert run_pid(sandbox, "first") == first  # "second" is now the least recently used

        third = run_pid(sandbox, "third")

        assert sandbox.instances.live == 2
        assert gone(second)
        assert run_pid(sandbox, "first") == first
        assert third not in (first, second)


def test_closing_the_sandbox_kills_its_instances() -> None:
    """close() ends every instance with the zygote."""
    sandbox = Sandbox(environment=ENVIRONMENT).start()
    pid = run_pid(sandbox, "key")
    sandbox.close()

    assert gone(pid)


@pytest.mark.parametrize("warm", [True, False], ids=["idle-instance", "new-instance"])
def test_closing_the_sandbox_during_a_keyed_run_leaves_the_next_pool_untouched(warm: bool) -> None:
    """A run whose sandbox is closed while it waits on the host ends in the pool it came from: the new pool that
    close() set up counts nothing it does not hold (a count below zero would let it start more than max_instances)."""
    with Sandbox(environment=ENVIRONMENT, instances=InstancePolicy(max_instances=2)) as sandbox:
        if warm:
            run_pid(sandbox, "key")

        def close_then_answer(op: str, payload: object) -> object:
            sandbox.close()
            return payload

        result = sandbox.run("echo(1)\nreturn pid()", instance_key="key", limits=LIMITS, on_request=close_then_answer)

        assert not result.ok
        assert (sandbox.instances.live, sandbox.instances.live_of(("key", LIMITS))) == (0, 0)
        assert run_pid(sandbox, "key") == run_pid(sandbox, "key")
        assert sandbox.instances.live == 1


def test_the_host_holds_each_process_serving_a_key_for_its_life(sandbox: Sandbox) -> None:
    """The host's hold is taken once when an instance starts and released when it is recycled."""
    held: list[str] = []

    def hold() -> Callable[[], object]:
        held.append("memory")
        return held.pop

    key = ("tenant-a", "hold", 1)
    first = sandbox.run("return pid()", instance_key=key, limits=LIMITS, instance_hold=hold)
    second = sandbox.run("return pid()", instance_key=key, limits=LIMITS, instance_hold=hold)

    assert held == ["memory"]
    assert second.value == first.value
    sandbox.run("crash()", instance_key=key, limits=LIMITS, instance_hold=hold)
    assert held == []


def test_a_refused_hold_runs_nothing(sandbox: Sandbox) -> None:
    """What the host's hold raises (no room for the key's memory, say) propagates before any process runs."""

    def refuse() -> Callable[[], object]:
        raise LookupError("no room")

    with pytest.raises(LookupError, match="no room"):
        sandbox.run("return pid()", instance_key=("tenant-a", "refused", 1), limits=LIMITS, instance_hold=refuse)
    assert sandbox.instances.idle_pids((("tenant-a", "refused", 1), LIMITS)) == []


def test_a_full_pool_runs_the_key_in_a_fresh_child_under_a_hold() -> None:
    """With every instance busy, a key's run goes to a fresh child, held for that run only."""
    held: list[str] = []

    def hold() -> Callable[[], object]:
        held.append("memory")
        return held.pop

    with Sandbox(environment=ENVIRONMENT, instances=InstancePolicy(max_instances=1)) as sandbox:
        run_pid(sandbox, "first")
        sandbox.instances.take(("first", LIMITS))  # now busy: the pool is full and has nothing idle to evict

        result = sandbox.run("return pid()", instance_key="second", limits=LIMITS, instance_hold=hold)

        assert result.ok
        assert held == []
        assert sandbox.instances.idle_pids(("second", LIMITS)) == []


def _concurrently(sandbox: Sandbox, sources: list[str], key: object, limits: Limits = LIMITS) -> list[RunResult]:
    """Run each of *sources* in *key*'s instances, all at once from threads of their own; return their results."""
    with concurrent.futures.ThreadPoolExecutor(len(sources)) as pool:
        futures = [pool.submit(sandbox.run, source, instance_key=key, limits=limits) for source in sources]
        return [future.result() for future in futures]


def test_concurrent_runs_of_one_key_share_at_most_max_per_key_instances() -> None:
    """Six runs of one key at once start two instances; the others wait for one of them instead of a third."""
    with Sandbox(environment=ENVIRONMENT, instances=InstancePolicy(max_per_key=2)) as sandbox:
        results = _concurrently(sandbox, ["import time\ntime.sleep(0.3)\nreturn pid()"] * 6, "busy")

        assert [result.error for result in results] == [None] * 6
        assert len({result.value for result in results}) == 2
        assert sandbox.instances.live_of(("busy", LIMITS)) == 2
        assert len(sandbox.instances.idle_pids(("busy", LIMITS))) == 2


def test_a_recycled_instance_gives_its_place_to_a_waiting_run() -> None:
    """A run waiting for the key's only instance gets a new one when that instance is recycled (a crash here)."""
    with Sandbox(environment=ENVIRONMENT, instances=InstancePolicy(max_per_key=1)) as sandbox:
        crashed, waited = _concurrently(sandbox, ["import time\ntime.sleep(0.3)\ncrash()", "return pid()"], "one")

        assert crashed.error is not None
        assert waited.ok, waited.error
        assert sandbox.instances.idle_pids(("one", LIMITS)) == [waited.value]


def test_a_waiting_run_waits_no_longer_than_its_wall_clock_limit() -> None:
    """While the key's instances stay busy, a waiting run ends at its wall-clock limit, having run nothing."""
    short = LIMITS.replace(wall_seconds=0.5)
    with Sandbox(environment=ENVIRONMENT, instances=InstancePolicy(max_per_key=1)) as sandbox:
        pid = run_pid(sandbox, "held", short)
        held = sandbox.instances.take(("held", short))  # busy now, as if it ran: the key has no place left
        assert held is not None

        started = time.monotonic()
        waited = sandbox.run("return pid()", instance_key="held", limits=short)
        waited_seconds = time.monotonic() - started
        sandbox.instances.put_back(held)

        assert waited.error is not None
        assert waited.error.type == "TimeLimitExceededError"
        assert "came free" in waited.error.message
        assert 0.45 < waited_seconds < 1.5
        assert run_pid(sandbox, "held", short) == pid


def test_a_replacement_is_set_up_off_the_request_path_while_runs_wait() -> None:
    """An instance near its last run, while runs of its key wait, gets its replacement set up in a thread of its own
    (the host's hold taken there, not by a run); no instance serves more than max_runs, and the key is back at its
    cap once the old one is recycled."""
    holders: list[str] = []

    def hold() -> Callable[[], object]:
        holders.append(threading.current_thread().name)
        return lambda: None

    with Sandbox(environment=ENVIRONMENT, instances=InstancePolicy(max_per_key=1, max_runs=10)) as sandbox:

        def runs(count: int) -> list[RunResult]:
            return [
                sandbox.run("return pid()", instance_key="k", limits=LIMITS, instance_hold=hold) for _ in range(count)
            ]

        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            results = [result for future in [pool.submit(runs, 12) for _ in range(3)] for result in future.result()]
        time.sleep(0.5)  # a replacement set up after the last run's handover goes idle

        assert [result.error for result in results] == [None] * 36
        assert max(collections.Counter(result.value for result in results).values()) <= 10
        assert "sandbox-instance-start" in holders
        assert sandbox.instances.live_of(("k", LIMITS)) <= 1


def _in_line(pool: InstancePool, key: PoolKey, count: int) -> None:
    """Wait until *count* runs of *key* wait in line in *pool*."""
    deadline = time.monotonic() + 5
    while pool.waiting_of(key) < count:
        assert time.monotonic() < deadline, f"{pool.waiting_of(key)} runs in line, {count} expected"
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("max_instances", "granted", "live"),
    [(16, Placement.START, 2), (1, Placement.FRESH, 1)],
    ids=["room-for-an-instance", "every-instance-running"],
)
def test_an_instance_waiting_on_the_host_does_not_count_against_the_cap(
    max_instances: int, granted: Placement, live: int
) -> None:
    """While the key's only instance waits for the host's answer, the run waiting in line gets a place to start
    another (a fresh child when max_instances are all running) once the wait outlasts its grace; once the answer is
    sent the key is at its cap again and a third run waits."""
    pool, key = InstancePool(InstancePolicy(max_per_key=1, max_instances=max_instances)), ("io", LIMITS)
    try:
        assert pool.acquire(key, deadline=time.monotonic() + 5) is Placement.START
        with concurrent.futures.ThreadPoolExecutor(1) as threads:
            waiting = threads.submit(pool.acquire, key, deadline=time.monotonic() + 5)
            _in_line(pool, key, 1)

            with pool.waiting_on_host(key):
                with pytest.raises(concurrent.futures.TimeoutError):
                    waiting.result(timeout=HOST_WAIT_GRACE_SECONDS / 2)
                assert waiting.result(timeout=5) is granted
                assert pool.live_of(key) == live

        assert pool.acquire(key, deadline=time.monotonic() + 0.2) is Placement.TIMED_OUT
    finally:
        pool.close()


def test_runs_waiting_on_the_host_do_not_wait_for_each_other() -> None:
    """With one instance per key, four runs whose request blocks until all four asked reach the host at once, each
    in an instance of its own; runs that make no request still share the key's one instance."""
    runs = 4
    arrived = threading.Barrier(runs, timeout=5)  # serialised runs break it: they fail instead of hanging

    def on_request(op: str, payload: object) -> object:
        arrived.wait()
        return payload

    with Sandbox(environment=ENVIRONMENT, instances=InstancePolicy(max_per_key=1)) as sandbox:
        with concurrent.futures.ThreadPoolExecutor(runs) as pool:
            futures = [
                pool.submit(
                    sandbox.run, "echo(1)\nreturn pid()", instance_key="io", limits=LIMITS, on_request=on_request
                )
                for _ in range(runs)
            ]
            results = [future.result() for future in futures]

        assert [result.error for result in results] == [None] * runs
        assert len({result.value for result in results}) == runs
        assert sandbox.instances.live_of(("io", LIMITS)) == runs  # idle now, until the reaper or the LRU ends them

        computing = _concurrently(sandbox, ["import time\ntime.sleep(0.3)\nreturn pid()"] * 2, "cpu")

        assert [result.error for result in computing] == [None] * 2
        assert computing[0].value == computing[1].value
        assert sandbox.instances.live_of(("cpu", LIMITS)) == 1


def test_requests_the_host_answers_at_once_keep_the_key_at_its_cap() -> None:
    """Runs whose requests the host answers at once are computing, not waiting on it: eight of them at once, each
    making thirty requests, share the key's one instance instead of each getting one while another's request is
    being answered."""
    source = "for i in range(30):\n    echo(i)\nreturn pid()"
    with Sandbox(environment=ENVIRONMENT, instances=InstancePolicy(max_per_key=1)) as sandbox:
        with concurrent.futures.ThreadPoolExecutor(8) as threads:
            futures = [
                threads.submit(
                    sandbox.run, source, instance_key="quick", limits=LIMITS, on_request=lambda _, value: value
                )
                for _ in range(8)
            ]
            results = [future.result() for future in futures]

        assert [result.error for result in results] == [None] * 8
        # One; two when a loaded machine held the host's thread up past the grace in the middle of an answer.
        assert len({result.value for result in results}) <= 2
        assert sandbox.instances.live_of(("quick", LIMITS)) <= 2


def test_runs_failing_while_they_wait_on_the_host_leave_the_key_at_its_cap() -> None:
    """Runs of one key whose request is answered at once, after their wall-clock limit, or never (the instance killed
    while the host answers), or that crash or raise after it, all at once: afterwards every live instance is idle and
    held once, nothing waits, and no instance is still counted as waiting on the host (two runs that only compute
    share the key's one instance again)."""
    short = LIMITS.replace(wall_seconds=1)
    holds = collections.Counter[str]()

    def hold() -> Callable[[], object]:
        holds["held"] += 1
        return lambda: holds.subtract(["held"])

    def on_request(op: str, payload: object) -> object:
        kind, pid = payload["value"]  # type: ignore[index]
        if kind == "killed":
            os.kill(pid, signal.SIGKILL)
        elif kind == "late":
            time.sleep(1.2)
        return payload

    kinds = ["answered", "killed", "late", "crash", "raise"] * 3
    source = (
        "kind = event\necho([kind, pid()])\nif kind == 'crash':\n    crash()\n"
        "if kind == 'raise':\n    raise ValueError(kind)\nreturn pid()"
    )
    key = ("faults", short)
    with Sandbox(environment=ENVIRONMENT, instances=InstancePolicy(max_per_key=1, max_instances=4)) as sandbox:
        with concurrent.futures.ThreadPoolExecutor(len(kinds)) as threads:
            futures = [
                threads.submit(
                    sandbox.run,
                    source,
                    event=kind,
                    instance_key="faults",
                    limits=short,
                    on_request=on_request,
                    instance_hold=hold,
                )
                for kind in kinds
            ]
            errors = {kind: future.result().error for kind, future in zip(kinds, futures, strict=True)}

        assert errors["answered"] is None
        assert {kind: error.type for kind, error in errors.items() if error is not None} == {
            "killed": "WorkerCrashedError",
            "late": "TimeLimitExceededError",
            "crash": "SnippetCrashedError",
            "raise": "SnippetError",
        }
        pool = sandbox.instances
        assert (pool.waiting_of(key), pool.live, holds["held"]) == (0, len(pool.idle_pids(key)), pool.live_of(key))

        computing = _concurrently(sandbox, ["import time\ntime.sleep(0.3)\nreturn pid()"] * 2, "faults", short)

        assert [result.error for result in computing] == [None] * 2
        assert computing[0].value == computing[1].value
