"""The Python SDK (agentflow.client) against a real server on 127.0.0.1: workflows in every form the
SDK takes, runs with typed events, interrupts, cancel, pagination, errors with their codes, API keys,
and the two promises that need a broken network to check: events survive dropped connections with
nothing missed or repeated, and a run creation retried after its answer was lost starts one run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from agentflow import Workflow
from agentflow.client import (
    APIConnectionError,
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    ConflictError,
    NotFoundError,
    RateLimitError,
)
from agentflow.dsl import load_yaml
from agentflow.runtime.events import RunCompleted
from agentflow.server import ServerConfig
from tests.cutting_proxy import CuttingProxy
from tests.server_workflows import APPROVAL, SLEEPY, STEPS, nap, tick
from tests.serving import running_server

KEY = "sdk-test-key-000000001"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = tmp_path_factory.mktemp("sdk") / "runs.db"
    config = ServerConfig(model=None, store=str(store), api_keys=[{"tenant": "acme", "key": KEY}], heartbeat_s=0.2)
    with running_server(config, tools=[tick, nap]) as url, Client(url, api_key=KEY) as af:
        for text in (STEPS, APPROVAL, SLEEPY):
            af.workflows.register(text)
        yield url


@pytest.fixture
def af(server: str) -> Iterator[Client]:
    with Client(server, api_key=KEY, timeout=20) as client:
        yield client


def test_a_run_streams_typed_events_in_order_and_ends_with_its_output(af: Client) -> None:
    run = af.runs.create("steps", {"n": 10})
    assert run.workflow == "steps" and run.status in ("pending", "running", "completed")
    events = list(af.runs.events(run.run_id))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    names = [e.event for e in events]
    assert names[0] == "run.started" and names[-1] == "run.completed"
    assert [e.node for e in events if e.event == "node.completed"] == ["a", "b", "c", "d"]
    assert isinstance(events[-1], RunCompleted) and events[-1].output == 14
    done = af.runs.get(run.run_id)
    assert done.status == "completed" and done.finished and done.output == 14
    # a follower that starts after event 3 gets the rest, and nothing before it
    assert [e.seq for e in af.runs.events(run.run_id, after=3)] == list(range(4, len(events) + 1))


def test_wait_returns_the_finished_run_and_stream_starts_and_follows(af: Client) -> None:
    run = af.runs.create("steps", {"n": 1, "delay": 0.05})
    assert af.runs.wait(run.run_id, timeout=30).output == 5
    streamed = list(af.runs.stream("steps", {"n": 2}))
    assert streamed[-1].event == "run.completed" and streamed[-1].output == 6
    assert af.runs.create("steps", {"n": 5}, wait=True).output == 9


def test_wait_gives_up_after_its_timeout(af: Client) -> None:
    run = af.runs.create("sleepy")
    with pytest.raises(TimeoutError):
        af.runs.wait(run.run_id, timeout=0.5)
    assert af.runs.cancel(run.run_id, "test over").status == "cancelled"


def test_an_interrupt_is_waited_for_then_resumed(af: Client) -> None:
    run = af.runs.create("approval", {"amount": 41})
    waiting = af.runs.wait(run.run_id, timeout=30)
    assert waiting.status == "interrupted" and waiting.interrupt is not None
    assert "Approve 41?" in str(waiting.interrupt)
    with pytest.raises(BadRequestError) as bad:
        af.runs.resume(run.run_id, {"approved": "yes"})  # against the interrupt's schema
    assert bad.value.status == 422
    af.runs.resume(run.run_id, {"approved": True})
    done = af.runs.wait(run.run_id, timeout=30)
    assert done.status == "completed" and done.output == {"approved": True}
    with pytest.raises(ConflictError) as conflict:
        af.runs.resume(run.run_id, {"approved": True})
    assert conflict.value.status == 409


def test_cancel_ends_a_running_run_and_its_stream(af: Client) -> None:
    run = af.runs.create("sleepy")
    cancelled = af.runs.cancel(run.run_id, "no longer needed")
    assert cancelled.status == "cancelled"
    last = list(af.runs.events(run.run_id))[-1]
    assert last.event == "run.cancelled" and last.reason == "no longer needed"
    with pytest.raises(ConflictError, match="already cancelled"):
        af.runs.cancel(run.run_id)


def test_the_same_idempotency_key_starts_one_run(af: Client) -> None:
    first = af.runs.create("steps", {"n": 1}, idempotency_key="order-17")
    again = af.runs.create("steps", {"n": 1}, idempotency_key="order-17")
    assert again.run_id == first.run_id
    assert af.runs.create("steps", {"n": 1}).run_id != af.runs.create("steps", {"n": 1}).run_id
    with pytest.raises(BadRequestError) as reused:
        af.runs.create("steps", {"n": 2}, idempotency_key="order-17")
    assert reused.value.code == "idempotency_key_reused"


def test_list_pages_through_every_run_newest_first(af: Client) -> None:
    ids = [af.runs.create("steps", {"n": i}, wait=True).run_id for i in range(5)]
    listed = [r.run_id for r in af.runs.list(workflow="steps", page_size=2)]
    assert len(listed) == len(set(listed))  # no page repeats a run
    assert [i for i in listed if i in ids] == ids[::-1]
    assert len(list(af.runs.list(workflow="steps", page_size=2, limit=3))) == 3
    assert all(r.status == "cancelled" for r in af.runs.list(status="cancelled"))


def test_workflows_in_every_form_register_and_version(af: Client, tmp_path: Path) -> None:
    text = STEPS.replace("name: steps", "name: forms")
    first = af.workflows.register(text)
    assert (first.name, first.version) == ("forms", 1)
    path = tmp_path / "forms.yaml"
    path.write_text(text.replace("four ticks", "still four ticks"), encoding="utf-8")
    assert af.workflows.register(path).version == 2
    spec = load_yaml(text, tools=["tick"])
    assert af.workflows.register(spec).version == 3
    assert af.workflows.register(spec.to_dict(), name="forms").version == 4
    built = Workflow("built", description="from the Python builder")
    built.tool("one", "tick", {"x": 1})
    summary = af.workflows.register(built)
    assert summary.name == "built" and summary.description == "from the Python builder"
    assert af.runs.create("built", wait=True).output is not None
    detail = af.workflows.get("forms", version=2)
    assert detail.version == 2 and detail.versions == [1, 2, 3, 4] and "still four ticks" in (detail.source or "")
    assert af.workflows.get("forms").source is None  # version 4 came as IR, not YAML
    assert {"steps", "forms", "built"} <= {w.name for w in af.workflows.list()}
    with pytest.raises(BadRequestError, match="name_mismatch"):
        af.workflows.register(text, name="other")
    af.workflows.delete("forms")
    with pytest.raises(NotFoundError) as gone:
        af.workflows.get("forms")
    assert gone.value.code == "workflow_not_found"


def test_validation_problems_come_back_with_their_line(af: Client) -> None:
    assert af.workflows.validate(STEPS.replace("name: steps", "name: fine")).valid
    broken = "name: broken\nnodes:\n  - {id: a, kind: tool, tool: no_such_tool, args: {}}\n"
    with pytest.raises(BadRequestError) as bad:
        af.workflows.validate(broken)
    assert bad.value.status == 422 and bad.value.code == "invalid_workflow"
    assert bad.value.details and bad.value.details[0]["line"] == 3
    with pytest.raises(NotFoundError):
        af.workflows.get("broken")  # validation registers nothing


def test_errors_say_what_and_where(af: Client) -> None:
    with pytest.raises(NotFoundError) as missing:
        af.runs.create("no_such_workflow", {})
    assert missing.value.code == "workflow_not_found" and "no_such_workflow" in str(missing.value)
    with pytest.raises(BadRequestError) as bad_input:
        af.runs.create("steps", {"n": "three"})
    assert bad_input.value.status == 422
    with pytest.raises(NotFoundError):
        af.runs.get("0" * 32)
    with pytest.raises(ValueError, match="not a valid name"):
        af.runs.get("../workflows")
    with pytest.raises(TypeError, match="a workflow is YAML text"):
        af.workflows.register(42)  # type: ignore[arg-type]


def test_api_keys_from_the_argument_or_the_environment(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTFLOW_API_KEY", raising=False)
    with Client(server) as anonymous, pytest.raises(AuthenticationError) as denied:
        anonymous.workflows.list()
    assert denied.value.code == "missing_api_key"
    with Client(server, api_key="wrong-key-0000000000") as wrong, pytest.raises(AuthenticationError):
        wrong.runs.get("x")
    monkeypatch.setenv("AGENTFLOW_API_KEY", KEY)
    monkeypatch.setenv("AGENTFLOW_URL", server)
    with Client() as from_env:
        assert "steps" in {w.name for w in from_env.workflows.list()}
        assert from_env.health().status == "ok"


def test_events_survive_dropped_connections_with_nothing_missed_or_repeated(af: Client, server: str) -> None:
    run = af.runs.create("steps", {"n": 0, "delay": 0.15})
    port = int(server.rsplit(":", 1)[1])
    # each of the first three connections carries the response head and part of the events, then breaks
    with CuttingProxy(port, cuts=3, cut_after=700) as proxy, Client(proxy.url, api_key=KEY) as through:
        events = list(through.runs.events(run.run_id))
        assert proxy.connections >= 4
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].event == "run.completed" and events[-1].output == 4
    assert [e.seq for e in events] == [e.seq for e in af.runs.events(run.run_id)]


def test_a_stream_that_keeps_breaking_gives_up_with_a_clear_error(af: Client, server: str) -> None:
    run = af.runs.create("sleepy")
    port = int(server.rsplit(":", 1)[1])
    with CuttingProxy(port, cuts=100, cut_after=0) as proxy, \
            Client(proxy.url, api_key=KEY, max_reconnects=2) as through, \
            pytest.raises(APIConnectionError, match="kept dropping"):
        list(through.runs.events(run.run_id))
    af.runs.cancel(run.run_id)


def test_a_create_whose_answer_was_lost_is_retried_and_starts_one_run(af: Client, server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    before = {r.run_id for r in af.runs.list(workflow="steps")}
    # the first connection delivers the request (the server starts the run) but loses the answer
    with CuttingProxy(port, cuts=1, cut_after=0) as proxy, Client(proxy.url, api_key=KEY) as through:
        run = through.runs.create("steps", {"n": 100})
        assert proxy.connections == 2
    new = {r.run_id for r in af.runs.list(workflow="steps")} - before
    assert new == {run.run_id}
    # a resume is not idempotent: a lost answer is reported, not sent again
    waiting = af.runs.create("approval", {"amount": 1})
    af.runs.wait(waiting.run_id, timeout=30)
    with CuttingProxy(port, cuts=1, cut_after=0) as proxy, Client(proxy.url, api_key=KEY) as through, \
            pytest.raises(APIConnectionError, match="not retried"):
        through.runs.resume(waiting.run_id, {"approved": False})
    assert af.runs.wait(waiting.run_id, timeout=30).status == "completed"


def test_an_unreachable_server_is_a_connection_error(tmp_path: Path) -> None:
    from tests.serving import free_port

    with Client(f"http://127.0.0.1:{free_port()}", max_retries=1) as af, \
            pytest.raises(APIConnectionError, match="ConnectError"):
        af.workflows.list()


def test_rate_limits_are_waited_out_or_reported() -> None:
    config = ServerConfig(model=None, store=":memory:", rate_limit_per_s=4, rate_limit_burst=1)
    with running_server(config, tools=[tick]) as url:
        with Client(url, max_retries=0) as impatient:
            impatient.workflows.list()
            with pytest.raises(RateLimitError) as limited:
                impatient.workflows.list()
            assert limited.value.retry_after is not None and limited.value.retry_after >= 1
        with Client(url, max_retries=3) as patient:
            for _ in range(3):
                patient.workflows.list()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_async_client_does_the_same(server: str, backend: str) -> None:
    async def main() -> None:
        async with AsyncClient(server, api_key=KEY) as af:
            assert "approval" in {w.name for w in await af.workflows.list()}
            run = await af.runs.create("steps", {"n": 20})
            events = [e async for e in af.runs.events(run.run_id)]
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert isinstance(events[-1], RunCompleted) and events[-1].output == 24
            waiting = await af.runs.create("approval", {"amount": 7})
            assert (await af.runs.wait(waiting.run_id, timeout=30)).status == "interrupted"
            await af.runs.resume(waiting.run_id, {"approved": True})
            assert (await af.runs.wait(waiting.run_id, timeout=30)).output == {"approved": True}
            await af.runs.create("steps", {"n": 3}, wait=True)
            listed = [r.run_id async for r in af.runs.list(workflow="steps", page_size=1)]
            assert listed[1] == run.run_id and len(listed) == len(set(listed)) >= 2
            assert len([r async for r in af.runs.list(workflow="steps", page_size=1, limit=1)]) == 1
            with pytest.raises(NotFoundError):
                await af.runs.get("f" * 32)
            streamed = [e.event async for e in af.runs.stream("steps", {"n": 1})]
            assert streamed[0] == "run.started" and streamed[-1] == "run.completed"

    anyio.run(main, backend=backend)
