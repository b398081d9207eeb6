"""Hook names: construction, parsing and ordering."""

import pytest

from activations import HOOK_KINDS, hook_name, parse_hook, sort_hooks


def test_hook_names_follow_transformerlens() -> None:
    assert hook_name(3, "resid_post") == "blocks.3.hook_resid_post"
    assert hook_name(0, "resid_pre") == "blocks.0.hook_resid_pre"
    assert hook_name(3, "attn_z") == "blocks.3.attn.hook_z"
    assert hook_name(12, "skip_out") == "blocks.12.hook_skip_out"


@pytest.mark.parametrize("layer", [0, 1, 9, 10, 123])
@pytest.mark.parametrize("kind", HOOK_KINDS)
def test_parse_inverts_hook_name(layer: int, kind: str) -> None:
    assert parse_hook(hook_name(layer, kind)) == (layer, kind)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "blocks.03.hook_resid_post",
        "blocks.3.hook_z",
        "blocks.-1.hook_resid_pre",
        "blocks.3.hook_resid_post ",
        "blocks.3.attn.hook_q",
        "hook_embed",
        "blocks.x.hook_resid_pre",
        None,
        3,
    ],
)
def test_parse_refuses_other_names(name: object) -> None:
    with pytest.raises(ValueError, match="not a hook name"):
        parse_hook(name)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("layer", "kind"),
    [(-1, "resid_pre"), (True, "resid_pre"), (1.0, "resid_pre"), (1, "mlp_out"), (1, "hook_resid_pre")],
)
def test_hook_name_refuses_bad_arguments(layer: object, kind: str) -> None:
    with pytest.raises(ValueError):
        hook_name(layer, kind)  # type: ignore[arg-type]


def test_sort_by_layer_then_forward_order() -> None:
    names = [
        hook_name(10, "resid_pre"),
        hook_name(2, "resid_post"),
        hook_name(2, "attn_z"),
        hook_name(2, "skip_out"),
        hook_name(2, "resid_pre"),
        hook_name(1, "resid_post"),
    ]
    assert sort_hooks(names) == [
        hook_name(1, "resid_post"),
        hook_name(2, "resid_pre"),
        hook_name(2, "attn_z"),
        hook_name(2, "skip_out"),
        hook_name(2, "resid_post"),
        hook_name(10, "resid_pre"),
    ]
