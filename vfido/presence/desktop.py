"""Desktop presence front end: a freedesktop notification with Allow / Deny buttons.

Talks to ``org.freedesktop.Notifications`` on the session bus with :mod:`vfido.presence.dbus`
(Desktop Notifications Specification 1.2): ``Notify`` with the actions ``allow`` / ``deny``,
critical urgency and the request's timeout as expiry, then waits for ``ActionInvoked`` /
``NotificationClosed`` from the notification server (signals from anyone else are ignored).
Closing the notification (reason 2, "dismissed by the user") is a refusal. When the request
ends some other way (``vfido approve``, timeout, host cancel) the notification is withdrawn
with ``CloseNotification``.

Without a session bus or notification server the ``fallback`` front end asks instead (the
terminal prompt when there is a terminal); the control socket can always answer.
"""

from __future__ import annotations

import html
import logging
import queue
import threading

from vfido.presence.dbus import (
    Connection,
    DBusError,
    Message,
    MessageType,
    Variant,
    session_bus_address,
)
from vfido.presence.pending import FrontEnd, PendingPresence, question, run_in_background

log = logging.getLogger("vfido.desktop")  # the name `vfido run` has always logged under

NOTIFICATIONS = "org.freedesktop.Notifications"
NOTIFICATIONS_PATH = "/org/freedesktop/Notifications"
ALLOW, DENY = "allow", "deny"
URGENCY_CRITICAL = 2
CLOSED_DISMISSED = 2
POLL = 0.1


class _Session:
    def __init__(self, conn: Connection, capabilities: set[str], owner: str) -> None:
        self.conn = conn
        self.capabilities = capabilities
        self.owner = owner


class DesktopNotifier:
    """Asks with a desktop notification; ``fallback`` asks when there is no notification server."""

    name = "notification"

    def __init__(
        self,
        address: str | None = None,
        *,
        fallback: FrontEnd | None = None,
        app_name: str = "vfido",
        icon: str = "security-high",
    ) -> None:
        self.address = address
        self.fallback = fallback
        self.app_name = app_name
        self.icon = icon
        self._session: _Session | None = None
        self._lock = threading.Lock()

    def _connect(self) -> _Session:
        with self._lock:
            session = self._session
            if session is not None and not session.conn.closed:
                return session
            address = self.address or session_bus_address()
            if not address:
                raise DBusError("vfido.Error.NoBus", "no D-Bus session bus")
            conn = Connection.open(address)
            try:
                # GetCapabilities first: it starts a D-Bus activatable notification server.
                (caps,) = conn.call(
                    NOTIFICATIONS, NOTIFICATIONS_PATH, NOTIFICATIONS, "GetCapabilities"
                )
                (owner,) = conn.call(
                    "org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus",
                    "GetNameOwner",
                    "s",
                    [NOTIFICATIONS],
                )
                conn.add_match(
                    f"type='signal',sender='{NOTIFICATIONS}',interface='{NOTIFICATIONS}',"
                    f"path='{NOTIFICATIONS_PATH}'"
                )
            except DBusError:
                conn.close()
                raise
            self._session = _Session(conn, set(caps), owner)
            return self._session

    def available(self) -> bool:
        try:
            self._connect()
        except DBusError as exc:
            log.debug("no desktop notifications: %s", exc)
            return False
        return True

    def close(self) -> None:
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.conn.close()

    def ask(self, pending: PendingPresence) -> None:
        try:
            session = self._connect()
        except DBusError as exc:
            self._fall_back(pending, f"no desktop notifications ({exc})")
            return
        if "actions" not in session.capabilities:
            # No buttons (e.g. notify-osd): inform, and let the fallback ask meanwhile.
            run_in_background(
                lambda: self._fall_back(pending, "the notification server has no buttons")
            )
            self._notify(session, pending, actions=False)
            return
        self._notify(session, pending, actions=True)

    def _fall_back(self, pending: PendingPresence, why: str) -> None:
        if self.fallback is not None:
            log.info("presence: %s: asking with the %s", why, self.fallback.name)
            self.fallback.ask(pending)
        else:
            log.warning(
                "presence: %s: answer request %d with `vfido approve` or `vfido deny`",
                why,
                pending.id,
            )

    def _texts(self, session: _Session, pending: PendingPresence, actions: bool) -> tuple[str, str]:
        summary = f"Security key: {question(pending.request)}"
        seconds = round(pending.remaining())
        how = "Allow or Deny" if actions else "Run `vfido approve` or `vfido deny`"
        body = f"{how} within {seconds} s. No answer means no."
        if actions:
            body += " (Or run `vfido approve` / `vfido deny`.)"
        if "body-markup" in session.capabilities:
            body = html.escape(body, quote=False)
        return summary, body

    def _notify(self, session: _Session, pending: PendingPresence, *, actions: bool) -> None:
        conn = session.conn
        events: queue.Queue[Message] = queue.Queue()

        def on_message(msg: Message) -> None:
            if (
                msg.type is MessageType.SIGNAL
                and msg.interface == NOTIFICATIONS
                and msg.sender == session.owner
                and msg.member in ("ActionInvoked", "NotificationClosed")
            ):
                events.put(msg)

        conn.add_handler(on_message)
        notification_id: int | None = None
        try:
            summary, body = self._texts(session, pending, actions)
            hints = {
                "urgency": Variant("y", URGENCY_CRITICAL),
                "category": Variant("s", "device"),
            }
            (notification_id,) = conn.call(
                NOTIFICATIONS,
                NOTIFICATIONS_PATH,
                NOTIFICATIONS,
                "Notify",
                "susssasa{sv}i",
                [
                    self.app_name,
                    0,
                    self.icon,
                    summary,
                    body,
                    [ALLOW, "Allow", DENY, "Deny"] if actions else [],
                    hints,
                    max(1, int(pending.remaining() * 1000)),
                ],
            )
            while not pending.done and pending.result is None:
                try:
                    msg = events.get(timeout=POLL)
                except queue.Empty:
                    continue
                if not msg.body or msg.body[0] != notification_id:
                    continue
                if msg.member == "ActionInvoked" and actions:
                    if msg.body[1] == ALLOW:
                        pending.answer(True, "notification")
                    elif msg.body[1] == DENY:
                        pending.answer(False, "notification")
                elif msg.member == "NotificationClosed":
                    reason = msg.body[1] if len(msg.body) > 1 else 0
                    if reason == CLOSED_DISMISSED and actions:
                        pending.answer(False, "notification dismissed")
                    notification_id = None  # already gone
                    return
        except DBusError as exc:
            log.warning("presence: notification failed (%s)", exc)
            if notification_id is None:
                self._fall_back(pending, "the notification failed")
        finally:
            conn.remove_handler(on_message)
            if notification_id is not None:
                try:
                    conn.call(
                        NOTIFICATIONS,
                        NOTIFICATIONS_PATH,
                        NOTIFICATIONS,
                        "CloseNotification",
                        "u",
                        [notification_id],
                    )
                except DBusError as exc:
                    log.debug("CloseNotification failed: %s", exc)
