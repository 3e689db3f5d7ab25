"""The AU catalogue and named AU sets: what prompts and evaluation rely on (ids, order, definitions)."""

from __future__ import annotations

import pytest
import yaml

from aullava.aus.catalogue import (
    ActionUnit,
    AUSet,
    action_unit,
    au_set,
    builtin_au_sets,
    catalogue,
    normalize_au_id,
)

REQUIRED_SETS = {
    "bp4d": ["AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU14", "AU15", "AU17", "AU23", "AU24"],
    "disfa": ["AU1", "AU2", "AU4", "AU6", "AU9", "AU12", "AU25", "AU26"],
    "disfa_intensity": ["AU1", "AU2", "AU4", "AU5", "AU6", "AU9", "AU12", "AU15", "AU17", "AU20", "AU25", "AU26"],
    "default": ["AU1", "AU2", "AU4", "AU6", "AU7", "AU9", "AU10", "AU12", "AU14", "AU15", "AU17", "AU23", "AU24",
                "AU25", "AU26"],
}
COMMON = [1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 20, 22, 23, 24, 25, 26, 27, 28, 43, 45, 46]


@pytest.mark.parametrize("name", sorted(REQUIRED_SETS))
def test_named_sets_have_exact_aus_in_order(name):
    s = au_set(name)
    assert s.ids == tuple(REQUIRED_SETS[name])
    assert len(s) == len(REQUIRED_SETS[name])
    assert s.name == name and s.description


def test_feafa_has_24_distinct_catalogue_aus_with_unilateral_ones():
    s = au_set("feafa")
    assert len(s) == 24 and len(set(s.ids)) == 24
    assert {"AU2L", "AU2R"} <= set(s.ids)
    assert any(a.side for a in s)


def test_builtin_sets_and_names_are_case_insensitive():
    sets = builtin_au_sets()
    assert set(REQUIRED_SETS) | {"feafa"} <= set(sets)
    assert au_set("BP4D") is sets["bp4d"]
    sets.clear()  # a copy: the registry itself is not mutated
    assert "bp4d" in builtin_au_sets()


@pytest.mark.parametrize(
    "given, canon",
    [(1, "AU1"), ("1", "AU1"), ("AU1", "AU1"), ("au01", "AU1"), ("AU01", "AU1"), (" AU 1 ", "AU1"),
     ("AU_12", "AU12"), ("AU2L", "AU2L"), ("au02l", "AU2L"), ("AU02R", "AU2R"), ("AU02L_c", "AU2L"),
     ("AU02_r", "AU2"), ("AU45_c", "AU45"), ("ad30r", "AD30R"), ("AD19", "AD19")],
)
def test_normalize_au_id(given, canon):
    assert normalize_au_id(given) == canon


@pytest.mark.parametrize("bad", ["", "AU", "smile", "AU1X", -1, None, 1.5, True])
def test_normalize_rejects_non_ids(bad):
    with pytest.raises(ValueError):
        normalize_au_id(bad)


def test_action_unit_accepts_any_spelling():
    au = action_unit("au06")
    assert au == action_unit(6) == action_unit("AU6")
    assert au.id == "AU6" and au.number == 6 and au.side is None and au.name == "Cheek Raiser"
    assert "crow" in au.definition
    left = action_unit("AU2l")
    assert (left.id, left.number, left.side) == ("AU2L", 2, "L")
    assert action_unit(19).id == "AD19"  # AU/AD prefix falls back to the one that exists


def test_unlisted_unilateral_variant_is_derived_from_bilateral():
    au = action_unit("AU6R")
    assert (au.id, au.number, au.side) == ("AU6R", 6, "R")
    assert au.name == "Right Cheek Raiser" and "right" in au.definition


def test_unknown_au_raises_key_error_naming_it():
    with pytest.raises(KeyError, match="AU99"):
        action_unit("au99")
    with pytest.raises(KeyError, match="AU99"):
        au_set(["AU1", "AU99"])
    with pytest.raises(KeyError, match="nope"):
        action_unit("nope")


def test_catalogue_covers_common_aus_with_short_definitions():
    cat = catalogue()
    for n in COMMON:
        assert f"AU{n}" in cat, n
    for au_id, au in cat.items():
        assert isinstance(au, ActionUnit) and au.id == au_id
        assert au.name.strip(), au_id
        assert au.definition.strip(), au_id
        assert len(au.definition.split()) <= 15, (au_id, au.definition)
        assert au.side in (None, "L", "R")
        assert normalize_au_id(au_id) == au_id


def test_every_builtin_set_only_uses_catalogue_aus():
    cat = catalogue()
    for s in builtin_au_sets().values():
        for au in s:
            assert cat[au.id] == au


def test_openface_columns():
    assert au_set("disfa").openface_columns() == [
        "AU01_c", "AU02_c", "AU04_c", "AU06_c", "AU09_c", "AU12_c", "AU25_c", "AU26_c"]
    assert au_set(["AU12", "AU45"]).openface_columns("r") == ["AU12_r", "AU45_r"]
    assert au_set(["AU2L", "AD30R"]).openface_columns("_c") == ["AU02L_c", "AD30R_c"]
    # the columns read back to the same ids
    s = au_set("feafa")
    assert [normalize_au_id(c) for c in s.openface_columns()] == list(s.ids)


def test_index_and_membership():
    s = au_set("bp4d")
    assert s.index("au12") == s.index(12) == 6
    assert "AU12" in s and "AU9" not in s
    with pytest.raises(KeyError, match="AU9"):
        s.index("AU9")


def test_list_and_comma_string_sets():
    s = au_set(["au01", 2, "AU4"])
    assert s.ids == ("AU1", "AU2", "AU4") and s.name == "custom"
    assert au_set("AU1, AU2,AU4").ids == s.ids
    with pytest.raises(ValueError, match="more than once"):
        au_set(["AU1", "au01"])


def test_unknown_set_name():
    with pytest.raises(KeyError, match="bp5d"):
        au_set("bp5d")


def test_user_yaml_single_set_with_inline_new_au(tmp_path):
    path = tmp_path / "my_feafa.yaml"
    path.write_text(yaml.safe_dump({
        "description": "FEAFA, names from the label header",
        "aus": ["AU1", "au02L",
                {"id": "AU61", "name": "Eyes Turn Left", "definition": "both eyes turned to the left"},
                {"id": "JawLeft", "name": "Jaw Left", "definition": "jaw shifted left"},
                {"id": "AU12", "name": "Smile", "definition": "mouth corners up"}],  # overrides the catalogue
    }))
    s = au_set(path)
    assert s.name == "my_feafa"
    assert s.ids == ("AU1", "AU2L", "AU61", "JawLeft", "AU12")
    assert s[2] == ActionUnit(id="AU61", number=61, name="Eyes Turn Left",
                              definition="both eyes turned to the left", side=None)
    assert s[3].number is None
    assert s[4].definition == "mouth corners up"
    assert action_unit("AU12").name == "Lip Corner Puller"  # the catalogue itself is untouched
    assert s.openface_columns() == ["AU01_c", "AU02L_c", "AU61_c", "JawLeft_c", "AU12_c"]
    assert au_set(str(path)) == s


def test_user_yaml_with_several_sets_and_action_units_list(tmp_path):
    path = tmp_path / "sets.yml"
    path.write_text(yaml.safe_dump({
        "action_units": [{"id": "AU64", "name": "Eyes Down", "definition": "both eyes looking down"}],
        "sets": {"a": {"aus": ["AU1", "AU64"], "description": "first"}, "b": {"aus": ["AU64", "AU26"]}},
    }))
    with pytest.raises(ValueError, match="set_name"):
        au_set(path)
    a = au_set(path, set_name="a")
    assert a.ids == ("AU1", "AU64") and a.description == "first" and a[1].name == "Eyes Down"
    assert au_set(path, set_name="b").ids == ("AU64", "AU26")
    with pytest.raises(KeyError, match="zz"):
        au_set(path, set_name="zz")


def test_user_yaml_unknown_au_without_definition_fails(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("aus: [AU1, AU77]\n")
    with pytest.raises(KeyError, match="AU77"):
        au_set(path)
    path.write_text("aus: [{id: AU77, name: Something}]\n")
    with pytest.raises(ValueError, match="definition"):
        au_set(path)


def test_to_dict_from_dict_round_trip_is_self_contained():
    s = au_set("feafa")
    d = s.to_dict()
    assert d["aus"][1] == {"id": "AU2L", "number": 2, "side": "L", "name": "Left Outer Brow Raiser",
                           "definition": action_unit("AU2L").definition}
    back = AUSet.from_dict(yaml.safe_load(yaml.safe_dump(d)))
    assert back == s
    assert au_set(s) is s
