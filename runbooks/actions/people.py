"""People in the loop: tell a contact, ask one (an approval), hand over (escalate)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from runbooks.actions.base import Action, ActionContext, ActionError, ActionResult, Args


class ContactArgs(Args):
    contacts: tuple[str, ...] = Field(min_length=1)
    message: str = Field(min_length=1)


def _notify(ctx: ActionContext, kind: str, contacts: tuple[str, ...], message: str) -> str:
    notify: Any = ctx.resources.get("notify")
    if notify is None:
        raise ActionError("no way to reach people is configured here (no notifier)")
    return str(notify(kind, contacts, message))


class NotifyContact(Action):
    """Send a notice to contacts (their channels from the config)."""

    name: ClassVar[str] = "notify.contact"
    Args = ContactArgs
    mutating = False
    resumable = True

    def run(self, args: ContactArgs, ctx: ActionContext) -> ActionResult:
        if ctx.dry_run:
            return ActionResult(False, f"would tell {', '.join(args.contacts)}: {args.message}")
        return ActionResult(False, _notify(ctx, "runbook_notice", args.contacts, args.message))


class AskContact(Action):
    """Tell contacts and wait for one of them to approve (the step's approval gate)."""

    name: ClassVar[str] = "ask.contact"
    Args = ContactArgs
    mutating = False
    resumable = True
    asks = True

    def run(self, args: ContactArgs, ctx: ActionContext) -> ActionResult:
        # The engine asked and got the answer before calling this: nothing left to do.
        return ActionResult(False, f"{', '.join(args.contacts)} answered")


class EscalateArgs(Args):
    message: str = Field(min_length=1)
    contacts: tuple[str, ...] = ()


class Escalate(Action):
    """Hand the incident to people (e.g. dispatch an engineer on site, SkyArch level 3)."""

    name: ClassVar[str] = "escalate.people"
    Args = EscalateArgs
    mutating = False
    resumable = True

    def run(self, args: EscalateArgs, ctx: ActionContext) -> ActionResult:
        if ctx.dry_run:
            return ActionResult(False, f"would escalate to people: {args.message}")
        return ActionResult(False, _notify(ctx, "runbook_escalation", args.contacts,
                                           args.message))
