# TRANSITIONAL(#18): re-export for branches in flight; the integrator removes it.
"""Moved to :mod:`vfido.presence.broker` (the broker), :mod:`vfido.presence.pending` (pending
requests, questions, front-end threads), :mod:`vfido.presence.auto` (auto/deny front ends) and
:mod:`vfido.presence.modes` (the registry of modes)."""

from vfido.presence.auto import AutoFrontEnd as AutoFrontEnd
from vfido.presence.auto import DenyFrontEnd as DenyFrontEnd
from vfido.presence.broker import *  # noqa: F403
from vfido.presence.broker import PresenceBroker as PresenceBroker
from vfido.presence.broker import _front_end_job as _front_end_job
from vfido.presence.broker import _instant_of as _instant_of
from vfido.presence.broker import broker_for as broker_for
from vfido.presence.modes import RUNTIME_MODES as RUNTIME_MODES
from vfido.presence.modes import front_ends_for as front_ends_for
from vfido.presence.pending import *  # noqa: F403
from vfido.presence.pending import _QUESTIONS as _QUESTIONS
from vfido.presence.pending import _WORKERS as _WORKERS
from vfido.presence.pending import CANCEL_POLL as CANCEL_POLL
from vfido.presence.pending import NAME_LIMIT as NAME_LIMIT
from vfido.presence.pending import FrontEnd as FrontEnd
from vfido.presence.pending import PendingPresence as PendingPresence
from vfido.presence.pending import _Workers as _Workers
from vfido.presence.pending import action as action
from vfido.presence.pending import clean as clean
from vfido.presence.pending import question as question
from vfido.presence.pending import run_in_background as run_in_background
