"""The graph_transforms spec syntax, as users paste it."""

from __future__ import annotations

import pytest

from tfshrink.errors import UserError
from tfshrink.transforms.spec import parse_spec


def test_names_params_quotes_and_repeated_keys() -> None:
    calls = parse_spec("""remove_nodes(op=identity, op=checknumerics)
    fold_constants(ignore_errors=true)
    strip_unused_nodes(type=float, shape="1,48,48,3") sort_by_execution_order""")
    assert [c.name for c in calls] == ["remove_nodes", "fold_constants", "strip_unused_nodes",
                                       "sort_by_execution_order"]
    assert calls[0].params == {"op": ["identity", "checknumerics"]}
    assert calls[2].params == {"type": ["float"], "shape": ["1,48,48,3"]}


def test_spec_quoted_once_more_than_the_shell_removed() -> None:
    assert [c.name for c in parse_spec("'strip_unused_nodes sort_by_execution_order'")] == [
        "strip_unused_nodes", "sort_by_execution_order"]


@pytest.mark.parametrize("spec, words", [
    ('strip_unused_nodes(shape="1,2)', "unbalanced"),
    ("remove_nodes(op=Identity", "never closed"),
    ("remove_nodes(Identity)", "key=value"),
    ("   ", "empty"),
])
def test_bad_specs_say_what_is_wrong(spec: str, words: str) -> None:
    with pytest.raises(UserError, match=words):
        parse_spec(spec)
