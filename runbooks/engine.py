"""The runbook engine: levels of steps, verified, with locks, budgets and gates.

One run at a time per target (a lock in the store, across processes). Each
level runs its steps — with timeouts, retries, ``on_failure``, approvals and
restart-storm budgets — then its verify; a verified level ends the run as
*succeeded*, a failed one goes to the next level or to people (*escalated*).
Every step's start and end, rendered inputs (secrets masked), outputs and error
are stored before and after it runs, so a crash is never silently forgotten:
the owner of an abandoned run resumes it at a step that says it is safe to run
again, or marks it *interrupted*.

A dry run walks every level and every step with ``dry_run`` set: actions only
describe what they would change (AWS calls use ``DryRun=True`` where the API
has it). It takes no lock and changes nothing.

The engine knows runbooks, actions and targets — not checks or incidents: what
it needs from the agent (the store, the emergency-contact gate, the incident
timeline) comes in through :class:`Ledger` and :class:`Hooks`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from runbooks.actions.base import Action, ActionContext, ActionError, ActionResult
from runbooks.schema import Level, Runbook, Step
from runbooks.template import TemplateError, render, truthy

logger = logging.getLogger(__name__)

#: How often waiting runs look again (a lock, an approval, the emergency contact).
POLL = 1.0
#: How often a running run tells the store it is alive.
HEARTBEAT = 10.0
#: ``resume_step`` meaning "every step of the level is done: go to its verify".
VERIFY = "verify"


class Clock(Protocol):
    def now(self) -> datetime: ...


class Ledger(Protocol):
    """The persistence the engine needs (agent.store.runbooks.RunbookStore)."""

    def lock(self, target: str, run_id: int, now: datetime) -> int | None: ...
    def unlock(self, target: str, run_id: int) -> None: ...
    def beat(self, run_id: int, now: datetime) -> None: ...
    def set_state(self, run_id: int, state: str, now: datetime, *, level: int | None = None,
                  outcome: str | None = None) -> None: ...
    def cancel_requested(self, run_id: int) -> bool: ...
    def step_started(self, run_id: int, level: int, step: str, action: str, attempt: int,
                     inputs: dict[str, Any], now: datetime, *, budget_key: str | None,
                     resumable: bool, state: str = "running") -> int: ...
    def step_finished(self, step_id: int, state: str, now: datetime, *, changed: bool,
                      outputs: dict[str, Any], summary: str, error: str | None) -> None: ...
    def get_step(self, step_id: int) -> Any: ...
    def budget_used(self, budget_key: str, since: datetime) -> int: ...
    def create(self, *, runbook: str, target: str, params: dict[str, Any], trigger: str,
               incident_id: int | None, requested_by: str, dry_run: bool, state: str,
               scheduled_for: datetime, now: datetime, owner: str | None = None,
               parent_id: int | None = None) -> int: ...


class Hooks(Protocol):
    """What the engine asks of the agent and tells it."""

    def record(self, request: RunRequest, kind: str, message: str,
               data: dict[str, Any] | None = None) -> None:
        """Audit log, and the incident timeline when the run belongs to one."""

    def emergency_ack_needed(self, request: RunRequest) -> bool:
        """Outside business hours, must this run wait for the emergency contact?"""

    def finished(self, request: RunRequest, state: str, outcome: str) -> None:
        """The run ended (a verified recovery resolves its incident)."""


@dataclass(frozen=True)
class RunRequest:
    run_id: int
    runbook: Runbook
    target: str
    params: dict[str, Any]
    trigger: str                          # auto | manual | scheduled
    dry_run: bool = False
    incident_id: int | None = None
    start_level: int = 0
    #: resume inside ``start_level`` at this step id (its earlier outputs reloaded)
    resume_step: str | None = None
    prior_outputs: dict[str, Any] = field(default_factory=dict)
    nested: bool = False                  # a level's `run:` (the lock is the parent's)
    parent_id: int | None = None


@dataclass
class Outcome:
    state: str                            # succeeded | failed | escalated | cancelled | planned
    message: str


class Cancelled(Exception):
    pass


class Engine:
    def __init__(self, ledger: Ledger, hooks: Hooks, clock: Clock,
                 runbooks: Callable[[str], Runbook],
                 actions: Callable[[str], type[Action]],
                 resources: Mapping[str, Any], scrub: Callable[[str], str] = str,
                 emergency_ack_timeout: float = 1800.0, poll: float = POLL) -> None:
        self.ledger = ledger
        self.hooks = hooks
        self.clock = clock
        self.runbooks = runbooks
        self.actions = actions
        self.resources = resources
        self.scrub = scrub
        self.emergency_ack_timeout = emergency_ack_timeout
        self.poll = poll
        #: set when the process stops: runs leave off where they are (the next start
        #: adopts them), without recording an end they did not reach
        self.stopping = threading.Event()

    # -- a run ---------------------------------------------------------------------

    def execute(self, request: RunRequest) -> Outcome:
        """Run ``request`` to its end; never raises for a step's trouble."""
        run = _Run(self, request)
        return run.go()


class _Run:
    """The state of one execution."""

    def __init__(self, engine: Engine, request: RunRequest) -> None:
        self.e = engine
        self.r = request
        self.cancel = threading.Event()
        runbook_timeout = request.runbook.timeout or 86400.0
        self.deadline = time.monotonic() + runbook_timeout
        self.steps: dict[str, Any] = dict(request.prior_outputs)
        self.secrets = {str(request.params[n]) for n in request.runbook.secret_parameters
                        if request.params.get(n)}
        self._stop_beating = threading.Event()
        self.resources = dict(engine.resources)
        notify = engine.resources.get("notify")
        if notify is not None:  # actions reach people about *this* run's incident
            self.resources["notify"] = lambda kind, contacts, message: notify(
                request, kind, contacts, self._mask(message))

    # -- lifecycle ---------------------------------------------------------------

    def go(self) -> Outcome:
        beating = threading.Thread(target=self._beat, name=f"runbook:{self.r.run_id}",
                                   daemon=True)
        beating.start()
        locked = False
        try:
            if not self.r.dry_run and not self.r.nested:
                held = self._take_lock()
                if isinstance(held, Outcome):
                    return self._end(held)
                locked = True
            return self._end(self._levels())
        except _Shutdown:
            locked = False  # keep the target: the run resumes when the agent is back
            return Outcome("running", "left off: the agent is stopping")
        except Cancelled:
            return self._end(Outcome("cancelled", "cancelled by an operator"))
        except _RunTimeout:
            return self._end(self._escalate("the run did not start within its timeout "
                                            f"({self.r.runbook.timeout:g} s)"))
        except Exception as exc:  # a bug must end the run visibly, not kill a thread
            logger.exception("runbook run #%d failed unexpectedly", self.r.run_id)
            return self._end(Outcome("failed", f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            self._stop_beating.set()
            if locked:
                self.e.ledger.unlock(self.r.target, self.r.run_id)

    def _beat(self) -> None:
        """Look for a cancel every poll (actions stop at once) and beat every HEARTBEAT."""
        last_beat = time.monotonic()
        while not self._stop_beating.wait(self.e.poll):
            try:
                if self.e.stopping.is_set() or self.e.ledger.cancel_requested(self.r.run_id):
                    self.cancel.set()
                if time.monotonic() - last_beat >= HEARTBEAT:
                    self.e.ledger.beat(self.r.run_id, self.e.clock.now())
                    last_beat = time.monotonic()
            except Exception:
                logger.exception("runbook heartbeat failed")

    def _take_lock(self) -> Outcome | None:
        """The target's lock; a manual run is refused, an automatic one waits."""
        while True:
            holder = self.e.ledger.lock(self.r.target, self.r.run_id, self.e.clock.now())
            if holder is None:
                return None
            if self.r.trigger == "manual":
                return Outcome("refused", f"{self.r.target} is in the hands of runbook run "
                                          f"#{holder}; try again when it ends")
            self._set("waiting_lock", f"waiting for run #{holder} to release {self.r.target}")
            self._sleep()

    def _end(self, outcome: Outcome) -> Outcome:
        outcome.message = self._mask(outcome.message)
        self.e.ledger.set_state(self.r.run_id, outcome.state, self.e.clock.now(),
                                outcome=outcome.message)
        self.e.hooks.record(self.r, f"runbook_{outcome.state}", outcome.message,
                            {"run": self.r.run_id, "runbook": self.r.runbook.name})
        self.e.hooks.finished(self.r, outcome.state, outcome.message)
        return outcome

    def _set(self, state: str, message: str, level: int | None = None) -> None:
        self.e.ledger.set_state(self.r.run_id, state, self.e.clock.now(), level=level)
        self.e.hooks.record(self.r, f"runbook_{state}", self._mask(message),
                            {"run": self.r.run_id, "runbook": self.r.runbook.name})

    def _sleep(self, seconds: float | None = None) -> None:
        self._check()
        if self.cancel.wait(self.e.poll if seconds is None else seconds):
            raise Cancelled
        self._check()

    def _check(self) -> None:
        if self.e.stopping.is_set():
            self.cancel.set()
            raise _Shutdown
        if self.e.ledger.cancel_requested(self.r.run_id):
            self.cancel.set()
        if self.cancel.is_set():
            raise Cancelled
        if time.monotonic() > self.deadline:
            raise _RunTimeout

    # -- levels ---------------------------------------------------------------------

    def _levels(self) -> Outcome:
        levels = self.r.runbook.levels
        planned: list[str] = []
        problems: list[str] = []
        try:
            for index in range(self.r.start_level, len(levels)):
                outcome = self._level(index, levels[index])
                if self.r.dry_run:
                    planned.append(f"level {index + 1}: {outcome.message}")
                    if outcome.state == "failed":  # a step that would fail: not a plan
                        problems.append(f"level {index + 1}: {outcome.message}")
                    continue
                if outcome.state in ("succeeded", "escalated", "failed"):
                    return outcome
        except _RunTimeout:
            return self._escalate(f"the run did not finish within its timeout "
                                  f"({self.r.runbook.timeout:g} s)")
        if problems:
            return Outcome("failed", "the dry run found what would fail: "
                                     + " | ".join(problems))
        if self.r.dry_run:
            return Outcome("planned", " | ".join(planned))
        return self._escalate("every level was tried and none verified the recovery")

    def _level(self, index: int, level: Level) -> Outcome:
        """One level: ``next`` (go on), or a final outcome."""
        self._set("running", f"level {index + 1}: {level.name}", level=index)
        if level.escalate is not None:
            message = str(render(level.escalate, self._context()))
            return Outcome("planned", f"would escalate: {message}") if self.r.dry_run \
                else self._escalate(message)
        if self._acts(level) and not self._emergency_contact_agrees():
            return self._escalate("the emergency contact could not be reached outside "
                                  "business hours, so the response was not carried out "
                                  "(SkyArch §3)")
        if level.run is not None:
            return self._hand_over(index, level)
        failed = self._steps(index, level)
        return failed if failed is not None else self._verify(index, level)

    def _acts(self, level: Level) -> bool:
        if level.acts is not None:
            return level.acts
        return any(self._action(s.action).mutating for s in level.steps) or \
            level.run is not None

    def _emergency_contact_agrees(self) -> bool:
        """Outside business hours an automatic run waits for the emergency contact."""
        if self.r.dry_run or self.r.trigger != "auto":
            return True
        waited = 0.0
        while self.e.hooks.emergency_ack_needed(self.r):
            if waited == 0.0:
                self._set("waiting_ack", "outside business hours: waiting for the emergency "
                                         "contact to acknowledge before acting")
            if waited >= self.e.emergency_ack_timeout:
                return False
            self._sleep()
            waited += self.e.poll
        if waited:
            self._set("running", "the emergency contact acknowledged: acting")
        return True

    def _hand_over(self, index: int, level: Level) -> Outcome:
        """A level that runs another runbook on the same target (same lock)."""
        assert level.run is not None
        child_book = self.e.runbooks(level.run)
        params = self._child_params(child_book, level)
        now = self.e.clock.now()
        child_id = self.e.ledger.create(
            runbook=child_book.name, target=self.r.target, params=self._masked(params),
            trigger=self.r.trigger, incident_id=self.r.incident_id,
            requested_by=f"run #{self.r.run_id}", dry_run=self.r.dry_run, state="running",
            scheduled_for=now, now=now, owner=f"run #{self.r.run_id}",
            parent_id=self.r.run_id)
        child = RunRequest(child_id, child_book, self.r.target, params, self.r.trigger,
                           self.r.dry_run, self.r.incident_id, nested=True,
                           parent_id=self.r.run_id)
        outcome = _Run(self.e, child).go()
        if outcome.state in ("succeeded", "planned"):
            return Outcome("succeeded" if not self.r.dry_run else "planned",
                           f"{child_book.name}: {outcome.message}")
        if outcome.state == "cancelled":
            raise Cancelled
        return Outcome("next", f"{child_book.name} ended {outcome.state}: {outcome.message}")

    def _child_params(self, child: Runbook, level: Level) -> dict[str, Any]:
        """Only what the level passes in ``with:`` (a same-named parameter may mean
        something else there: a service's 60 s is not a server's boot time)."""
        from runbooks.params import resolve

        return resolve(child, render(dict(level.with_), self._context()))

    # -- steps ----------------------------------------------------------------------

    def _steps(self, index: int, level: Level) -> Outcome | None:
        """Run the level's steps; an outcome if the level cannot go on to its verify."""
        ids = [s.id for s in level.steps]
        resuming = index == self.r.start_level and self.r.resume_step is not None
        if resuming and self.r.resume_step == VERIFY:
            return None
        position = ids.index(self.r.resume_step) if (
            resuming and self.r.resume_step in ids) else 0
        while position < len(level.steps):
            step = level.steps[position]
            result = self._step(index, step)
            if result == "ok":
                position += 1
            elif result.startswith("goto:"):
                position = ids.index(result[5:])
            elif result == "continue":
                position += 1
            else:
                return Outcome("failed" if result == "abort" else result, self._last_error)
        return None

    _last_error = ""

    def _step(self, index: int, step: Step) -> str:
        """``ok``, ``continue``, ``goto:ID``, ``abort`` or ``escalated``."""
        self._check()
        context = self._context()
        if step.when is not None and not truthy(step.when, context):
            self._record_skip(index, step, f"skipped: `when` is false ({step.when})")
            return "ok"
        budget_key = f"{self.r.target}|{step.budget.key}" if step.budget else None
        if step.budget is not None and not self.r.dry_run:
            exhausted = self._budget_exhausted(step, budget_key or "")
            if exhausted:
                self._last_error = exhausted
                self._escalate(exhausted)
                return "escalated"
        action = self._action(step.action)
        if (step.approval is not None or action.asks) and not self.r.dry_run:
            verdict = self._approval(index, step, context)
            if verdict != "approved":
                return verdict
        return self._attempts(index, step, action, budget_key)

    def _attempts(self, index: int, step: Step, action: type[Action],
                  budget_key: str | None) -> str:
        for attempt in range(1, step.retries + 2):
            error = self._attempt(index, step, action, attempt, budget_key)
            if error is None:
                return "ok"
            self._check()  # a cancelled step failed because it was cancelled
            self._last_error = f"step {step.id}: {error}"
            if attempt <= step.retries:
                self._sleep(step.retry_delay)
        if step.on_failure == "abort":
            return "abort"
        return step.on_failure

    def _attempt(self, index: int, step: Step, action: type[Action], attempt: int,
                 budget_key: str | None) -> str | None:
        """One try of a step; the error text, or None if it worked."""
        try:
            args = action.Args.model_validate(render(dict(step.with_), self._context()))
        except (TemplateError, ValidationError) as exc:
            inputs: dict[str, Any] = {"with": self._masked(dict(step.with_))}
            step_id = self._started(index, step, action, attempt, inputs, budget_key)
            message = f"bad arguments: {_describe(exc)}"
            self._finished(step_id, "failed", ActionResult(False, message), message)
            return message
        inputs = self._masked(args.model_dump(mode="json"))
        step_id = self._started(index, step, action, attempt, inputs, budget_key)
        result, error, state = self._call(action, args, min(step.timeout, self._left()))
        self._finished(step_id, state, result, error)
        if error is None:
            self.steps[step.id] = {"outputs": result.outputs, "changed": result.changed,
                                   "summary": result.summary}
        return error

    def _call(self, action: type[Action], args: Any,
              timeout: float) -> tuple[ActionResult, str | None, str]:
        """Run the action in its own thread, bounded by ``timeout``."""
        ctx = ActionContext(self.r.target, self.r.dry_run, time.monotonic() + timeout,
                            self.cancel, self._progress, self.resources)
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["result"] = action().run(args, ctx)
            except ActionError as exc:
                box["error"], box["outputs"] = str(exc), exc.outputs
            except Exception as exc:  # an action bug is a failed step, not a crash
                logger.exception("action %s failed", action.name)
                box["error"] = f"{type(exc).__name__}: {exc}"

        thread = threading.Thread(target=work, name=f"action:{action.name}", daemon=True)
        thread.start()
        thread.join(timeout + 1.0)
        if thread.is_alive():
            ctx.cancelled.set()
            return ActionResult(False, "timed out"), f"no result within {timeout:g} s " \
                "(the step's timeout)", "timed_out"
        if "error" in box:
            return ActionResult(False, box["error"], box.get("outputs", {})), \
                self._mask(box["error"]), "failed"
        result: ActionResult = box["result"]
        return result, None, "planned" if self.r.dry_run else "succeeded"

    def _verify(self, index: int, level: Level) -> Outcome:
        verify = level.verify
        assert verify is not None
        as_step = Step(id="verify", action=verify.action, timeout=verify.timeout,
                       **{"with": dict(verify.with_)})
        action = self._action(verify.action)
        error = self._attempt(index, as_step, action, 1, None)
        if self.r.dry_run:
            return Outcome("planned", f"{len(level.steps)} step(s), then verify with "
                                      f"{verify.action}")
        if error is None:
            return Outcome("succeeded", f"recovery verified at level {index + 1} "
                                        f"({level.name})")
        if level.on_verify_failure == "escalate":
            return self._escalate(f"level {index + 1} did not verify: {error}")
        return Outcome("next", f"level {index + 1} did not verify: {error}")

    # -- people ------------------------------------------------------------------------

    def _approval(self, index: int, step: Step, context: dict[str, Any]) -> str:
        """``approved``, or what to do instead (abort / continue / escalated)."""
        approval = step.approval
        approvers = tuple(approval.approvers) if approval else ()
        if not approvers and isinstance(step.with_.get("contacts"), list | tuple):
            approvers = tuple(render(list(step.with_["contacts"]), context))
        timeout = approval.timeout if approval else 1800.0
        on_timeout = approval.on_timeout if approval else "escalate"
        message = render(approval.message, context) if approval and approval.message else \
            f"approve step {step.id} ({step.action}) of {self.r.runbook.name} on {self.r.target}"
        step_id = self.e.ledger.step_started(
            self.r.run_id, index, step.id, "approval", 1,
            {"approvers": list(approvers), "message": message}, self.e.clock.now(),
            budget_key=None, resumable=True, state="waiting_approval")
        self._set("waiting_approval", f"{message} — kanshi runbook approve {self.r.run_id}"
                                      f" --by NAME ({', '.join(approvers) or 'any operator'})")
        self._ask(approvers, message)
        waited = 0.0
        while waited < timeout:
            record = self.e.ledger.get_step(step_id)
            if record is not None and record.approval is not None:
                return self._decided(step_id, record, approvers)
            self._sleep()
            waited += self.e.poll
        self._finish_approval(step_id, "timed_out", f"nobody answered within {timeout:g} s")
        self._last_error = f"nobody approved step {step.id} within {timeout:g} s"
        if on_timeout == "escalate":
            self._escalate(self._last_error)
            return "escalated"
        return on_timeout

    def _decided(self, step_id: int, record: Any, approvers: tuple[str, ...]) -> str:
        by = record.approval_by or "?"
        if approvers and by not in approvers:
            self._finish_approval(step_id, "failed", f"{by} may not approve this step")
            self._last_error = f"{by} is not one of the approvers ({', '.join(approvers)})"
            return "abort"
        if record.approval != "approved":
            self._finish_approval(step_id, "failed", f"rejected by {by}")
            self._last_error = f"rejected by {by}"
            return "abort"
        self._finish_approval(step_id, "succeeded", f"approved by {by}")
        self._set("running", f"approved by {by}")
        return "approved"

    def _finish_approval(self, step_id: int, state: str, summary: str) -> None:
        self.e.ledger.step_finished(step_id, state, self.e.clock.now(), changed=False,
                                    outputs={}, summary=summary,
                                    error=None if state == "succeeded" else summary)

    def _ask(self, contacts: tuple[str, ...], message: str) -> None:
        notify = self.resources.get("notify")
        if notify is not None and contacts:
            try:
                notify("runbook_approval", contacts, message)
            except Exception as exc:
                logger.warning("could not ask %s: %s", ", ".join(contacts), exc)

    def _escalate(self, message: str) -> Outcome:
        notify = self.resources.get("notify")
        if notify is not None and not self.r.dry_run:
            try:
                notify("runbook_escalation", (), message)
            except Exception as exc:
                logger.warning("could not escalate: %s", exc)
        return Outcome("escalated", message)

    # -- budgets --------------------------------------------------------------------------

    def _budget_exhausted(self, step: Step, key: str) -> str | None:
        assert step.budget is not None
        since = self.e.clock.now() - timedelta(seconds=step.budget.per)
        used = self.e.ledger.budget_used(key, since)
        if used < step.budget.max:
            return None
        return (f"restart-storm budget spent: {step.id} ran {used} times on {self.r.target} in "
                f"the last {step.budget.per / 3600:g} h (at most {step.budget.max}); handing "
                "over to people instead of doing it again")

    # -- bookkeeping ----------------------------------------------------------------------

    def _started(self, index: int, step: Step, action: type[Action], attempt: int,
                 inputs: dict[str, Any], budget_key: str | None) -> int:
        resumable = action.resumable if step.resumable is None else step.resumable
        step_id = self.e.ledger.step_started(self.r.run_id, index, step.id, action.name,
                                             attempt, inputs, self.e.clock.now(),
                                             budget_key=budget_key, resumable=resumable)
        self.e.hooks.record(self.r, "runbook_step", f"{step.id} ({action.name}) started",
                            {"run": self.r.run_id, "step": step.id, "attempt": attempt,
                             "inputs": inputs})
        return step_id

    def _finished(self, step_id: int, state: str, result: ActionResult,
                  error: str | None) -> None:
        summary = self._mask(result.summary)
        outputs = self._masked(result.outputs)
        self.e.ledger.step_finished(step_id, state, self.e.clock.now(), changed=result.changed,
                                    outputs=outputs, summary=summary, error=error)
        self.e.hooks.record(self.r, "runbook_step", f"{state}: {error or summary}",
                            {"run": self.r.run_id, "step_row": step_id, "state": state,
                             "changed": result.changed, "outputs": outputs})

    def _record_skip(self, index: int, step: Step, why: str) -> None:
        step_id = self.e.ledger.step_started(self.r.run_id, index, step.id, step.action, 1, {},
                                             self.e.clock.now(), budget_key=None,
                                             resumable=True, state="skipped")
        self.e.ledger.step_finished(step_id, "skipped", self.e.clock.now(), changed=False,
                                    outputs={}, summary=why, error=None)

    def _progress(self, line: str) -> None:
        logger.info("run #%d: %s", self.r.run_id, self._mask(line))

    def _context(self) -> dict[str, Any]:
        return {"params": self.r.params, "target": self.r.target, "steps": self.steps,
                "run": {"id": self.r.run_id, "trigger": self.r.trigger,
                        "dry_run": self.r.dry_run, "incident": self.r.incident_id}}

    def _action(self, name: str) -> type[Action]:
        return self.e.actions(name)

    def _left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def _mask(self, text: str) -> str:
        text = self.e.scrub(text)
        for secret in self.secrets:
            if len(secret) >= 3:
                text = text.replace(secret, "********")
        return text

    def _masked(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._mask(value)
        if isinstance(value, dict):
            return {k: self._masked(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._masked(v) for v in value]
        return value


class _RunTimeout(Exception):
    pass


class _Shutdown(Exception):
    pass


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return str(exc)
