"""mail.send's pure parts: who a mail goes to and from, in each mode, and the refusals."""

from __future__ import annotations

import pytest

from middlewared.errors import ValidationErrors
from middlewared.mail import Attachment, MailPermanentError
from middlewared_plugins import mailsend

SETTINGS = {"host": "smtp", "from_email": "mw@example.com", "noreply_email": ""}
PARTS = [{"type": "text/plain", "body": "hi"}]
ZOE = mailsend.Caller("zoe", 'Zoë "Z" Ünal', "zoe@example.org")


def test_from_mode_writes_in_the_callers_name_with_reply_to() -> None:
    to = [{"name": "Doe, Jane", "email": "jane@doe.example"}, {"email": "x@y.example"}]
    mail = mailsend.compose(
        {"mode": "from", "to": to, "subject": "s", "parts": PARTS}, ZOE, SETTINGS
    )
    assert mail.sender == '"Zoë \\"Z\\" Ünal" <mw@example.com>'
    assert mail.reply_to == '"Zoë \\"Z\\" Ünal" <zoe@example.org>'
    assert mail.to == ('"Doe, Jane" <jane@doe.example>', "x@y.example")
    assert (mail.body_text, mail.body_html) == ("hi", None)


def test_noreply_falls_back_to_from_email_and_keeps_names_on_one_line() -> None:
    caller = mailsend.Caller("al", "Al\r\nBcc: evil@example.com", "al@example.org")
    mail = mailsend.compose({"mode": "noreply", "subject": "s", "parts": PARTS}, caller, SETTINGS)
    assert mail.sender == "mw@example.com" and mail.reply_to is None
    assert mail.to == ('"Al Bcc: evil@example.com" <al@example.org>',)


@pytest.mark.parametrize(
    ("options", "caller", "reason"),
    [
        ({"mode": "noreply"}, mailsend.Caller("b", "", ""), "has no email"),
        (
            {"mode": "from", "to": [{"email": "a@b.c"}]},
            mailsend.Caller("b", "", ""),
            "has no email",
        ),
        ({"mode": "from"}, ZOE, "needs recipients"),
        ({"mode": "noreply", "to": [{"email": "a@b.c"}]}, ZOE, "own email"),
        ({"mode": "noreply", "parts": PARTS * 2}, ZOE, "Two parts"),
    ],
)
def test_refusals_say_why(options: dict[str, object], caller: mailsend.Caller, reason: str) -> None:
    with pytest.raises(ValidationErrors) as e:
        mailsend.compose({"subject": "s", "parts": PARTS, **options}, caller, SETTINGS)
    assert reason in str(e.value)


def test_unconfigured_mail_is_a_permanent_failure() -> None:
    with pytest.raises(MailPermanentError, match="not configured"):
        mailsend.compose({"mode": "noreply", "subject": "s", "parts": PARTS}, ZOE, {"host": ""})


def test_attachments_are_decoded_bounded_and_hidden_from_records() -> None:
    assert mailsend.decode_content(0, {"filename": "a", "content": "aGk="}).content == b"hi"
    with pytest.raises(ValidationErrors, match="Not base64"):
        mailsend.decode_content(0, {"filename": "a", "content": "a b"})
    with pytest.raises(ValidationErrors, match="more than"):
        mailsend.check_size([Attachment("a", b"x" * (mailsend.MAX_ATTACHMENTS_BYTES + 1))])
    shown = mailsend.shown({"mode": "from", "attachments": [{"filename": "a", "content": "aGk="}]})
    assert shown["attachments"] == [{"filename": "a", "content_length": 4}]
