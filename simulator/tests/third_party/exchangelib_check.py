"""Drives the simulated Exchange with a real third-party EWS client, Python's exchangelib.

Run by simulator/tests/integration/ews_third_party.rs (see there); by hand:
    python exchangelib_check.py ORIGIN
with the expectations in the environment:
    EXL_USER, EXL_PASSWORD      the service account (Basic auth)
    EXL_ROOM                    the resource mailbox it impersonates
    EXL_ORGANIZER               the organizer mailbox, impersonated to read the replies
    EXL_ACCEPT_SUBJECT          the recurring meeting to accept (its request is in the room's Inbox)
    EXL_DECLINE_SUBJECT         the meeting to decline
    EXL_TAG                     text the accepted meeting's body holds
    EXL_VIEW_START, EXL_VIEW_END  the calendar view window (ISO 8601, UTC)

It uses exchangelib's ordinary API only (Configuration with a service endpoint, Basic auth,
impersonation, no autodiscover) and prints one JSON object with what it saw; the Rust test
asserts on it. Any exchangelib error ends the script with a traceback and a non-zero status.
"""

import datetime
import json
import os
import sys

from exchangelib import (
    BASIC,
    IMPERSONATION,
    Account,
    Build,
    Configuration,
    Credentials,
    EWSDateTime,
    EWSTimeZone,
    ExtendedProperty,
    Version,
)
from exchangelib.items import MeetingRequest
from exchangelib.protocol import BaseProtocol, NoVerifyHTTPAdapter


class CleanGlobalObjectId(ExtendedProperty):
    """PidLidCleanGlobalObjectId: the meeting's GOID, which is what calendar:UID shows in hex."""

    property_set_id = "6ed8da90-450b-101b-98da-00aa003f1305"
    property_id = 35
    property_type = "Binary"


def env(name):
    value = os.environ.get(name)
    if not value:
        sys.exit(f"exchangelib_check.py: the environment variable {name} is not set")
    return value


def when(text):
    parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return EWSDateTime.from_datetime(parsed.astimezone(datetime.timezone.utc)).astimezone(EWSTimeZone("UTC"))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: exchangelib_check.py ORIGIN (e.g. https://127.0.0.1:8443)")
    origin = sys.argv[1].rstrip("/")
    accept_subject = env("EXL_ACCEPT_SUBJECT")
    decline_subject = env("EXL_DECLINE_SUBJECT")
    tag = env("EXL_TAG")

    # The simulator's certificate is self-signed.
    BaseProtocol.HTTP_ADAPTER_CLS = NoVerifyHTTPAdapter
    MeetingRequest.register("clean_global_object_id", CleanGlobalObjectId)
    config = Configuration(
        service_endpoint=f"{origin}/EWS/Exchange.asmx",
        credentials=Credentials(env("EXL_USER"), env("EXL_PASSWORD")),
        auth_type=BASIC,
        version=Version(build=Build(15, 2)),
    )
    room = Account(env("EXL_ROOM"), config=config, autodiscover=False, access_type=IMPERSONATION)
    out = {"exchangelib": __import__("exchangelib").__version__}

    # The hierarchy a client walks first.
    out["root_children"] = sorted(f.name for f in room.root.children)
    out["msg_folder_root_children"] = sorted(f.name for f in room.msg_folder_root.children)

    # The room's Inbox: the meeting requests.
    inbox_items = list(room.inbox.all().order_by("datetime_received"))
    out["inbox"] = [{"type": type(i).__name__, "subject": i.subject, "item_class": i.item_class} for i in inbox_items]
    requests = {i.subject: i for i in inbox_items if isinstance(i, MeetingRequest)}
    request = requests[accept_subject]
    out["request"] = {
        "uid": request.clean_global_object_id.hex().upper() if request.clean_global_object_id else None,
        "start": request.start.isoformat(),
        "end": request.end.isoformat(),
        "recurrence_pattern": type(request.recurrence.pattern).__name__ if request.recurrence else None,
        "recurrence_occurrences": getattr(request.recurrence.boundary, "number", None) if request.recurrence else None,
        "body_has_tag": tag in str(request.body),
        "organizer": request.organizer.email_address if request.organizer else None,
    }

    # SyncFolderItems: a full sync, then nothing new from the kept state.
    first_sync = [change for change, _ in room.inbox.sync_items()]
    state_after_first = room.inbox.item_sync_state
    second_sync = [change for change, _ in room.inbox.sync_items()]
    out["sync"] = {
        "first": first_sync,
        "state_kept": bool(state_after_first),
        "second": second_sync,
    }

    # Answer the requests.
    request.accept(body="Accepted by a third-party client")
    requests[decline_subject].decline(body="Declined by a third-party client")
    out["sync"]["after_answers"] = sorted(change for change, _ in room.inbox.sync_items())

    # The room's Calendar.
    calendar_items = list(room.calendar.all())
    out["calendar_all"] = [
        {"subject": i.subject, "type": i.type, "uid": i.uid, "my_response": i.my_response_type}
        for i in calendar_items
    ]
    out["room_sent"] = sorted(i.subject for i in room.sent.all())
    out["room_deleted_items"] = sorted(i.subject for i in room.trash.all())
    out["calendar_filter_subject"] = room.calendar.filter(subject=accept_subject).count()
    view = list(room.calendar.view(start=when(env("EXL_VIEW_START")), end=when(env("EXL_VIEW_END"))))
    out["view"] = [
        {"subject": v.subject, "type": v.type, "start": v.start.isoformat()}
        for v in view
        if v.subject == accept_subject
    ]

    # The organizer's Inbox: the replies.
    organizer = Account(env("EXL_ORGANIZER"), config=config, autodiscover=False, access_type=IMPERSONATION)
    out["organizer_inbox"] = [
        {"type": type(i).__name__, "subject": i.subject, "item_class": i.item_class}
        for i in organizer.inbox.all().order_by("datetime_received")
    ]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
