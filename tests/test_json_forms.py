"""``ErrorFirstForm.from_json``: every JSON form of a class shares one JSON variant of its
fields (no deep copy per request), which never leaks into the class's own fields (the web
forms and the command line, where numbers arrive as text)."""

from __future__ import annotations

import pytest

from orchestration.errors import ValidationFailed
from orchestration.forms.callbacks import HeartbeatForm


def test_json_forms_of_a_class_share_their_fields() -> None:
    first = HeartbeatForm.from_json({"iteration": 1})
    second = HeartbeatForm.from_json({"iteration": 2})

    assert first.fields["iteration"] is second.fields["iteration"]
    assert first.validated()["iteration"] == 1 and second.validated()["iteration"] == 2
    assert HeartbeatForm.base_fields["iteration"] is not first.fields["iteration"]


def test_a_json_form_refuses_text_numbers_while_the_class_still_takes_them() -> None:
    with pytest.raises(ValidationFailed) as refused:
        HeartbeatForm.from_json({"iteration": "5"}).validated()
    assert "iteration" in (refused.value.details or {})

    typed = HeartbeatForm(data={"iteration": "5"})  # a person at a form, after a JSON one
    assert typed.is_valid() and typed.cleaned_data["iteration"] == 5


def test_one_requests_errors_do_not_reach_the_next() -> None:
    with pytest.raises(ValidationFailed):
        HeartbeatForm.from_json({"iteration": -1, "tokensIn": "x"}).validated()

    assert HeartbeatForm.from_json({"iteration": 3, "tokensIn": 7}).validated()["tokensIn"] == 7
