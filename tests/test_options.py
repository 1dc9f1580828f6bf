"""keras_dkd.options: the run's options, checked once, round-tripped through config.json."""

from __future__ import annotations

import dataclasses
import json

import pytest

from keras_dkd.errors import UserError
from keras_dkd.options import DataOptions, Recipe, RunOptions, architecture


@pytest.mark.once
def test_flat_options_route_to_data_recipe_and_run_and_round_trip_through_json():
    options = RunOptions.from_flat(dataset="emodb", protocol="loso", fold="speaker08",
                                   variant="kd", epochs=5, seed=3, cache_dir="/tmp/c",
                                   recipe="paper")
    assert options.data == DataOptions("emodb", "four_class", "loso", 1, cache_dir="/tmp/c")
    assert options.recipe == Recipe(variant="kd", epochs=5)
    assert options.seed == 3 and options.split_seed == 3
    flat = json.loads(json.dumps(options.to_dict()))  # what config.json holds
    assert flat["fold"] == 1 and flat["variant"] == "kd" and flat["config"] == "four_class"
    assert RunOptions.from_dict(flat) == options
    assert architecture("cnn") == "cnn" and architecture("dkd") == "cnn_mha"


@pytest.mark.once
def test_an_option_missing_from_an_old_config_reads_as_it_behaved_then():
    """A config written before ``student_init`` or ``freq_warp`` existed trained as their field
    defaults (no copy, no warping), though today's ``default`` recipe sets both."""
    today = RunOptions.from_flat(dataset="emodb", protocol="loso", fold=0)
    assert (today.recipe.student_init, today.recipe.freq_warp) == ("teacher", 0.1)
    old = {k: v for k, v in today.to_dict().items() if k not in ("student_init", "freq_warp")}
    then = RunOptions.from_dict(old)
    assert (then.recipe.student_init, then.recipe.freq_warp) == ("random", 0.0)
    assert then.recipe.learning_rate == 1e-3 and then.recipe.name == "default"
    assert RunOptions.from_dict(today.to_dict()) == today


@pytest.mark.once
def test_replace_makes_study_variants_and_checks_them():
    base = RunOptions.from_flat(dataset="emodb", protocol="loso", fold=0)
    other = base.replace(variant="cnn", fold=4, seed=2)
    assert (other.recipe.variant, other.data.fold, other.seed) == ("cnn", 4, 2)
    assert base.recipe.variant == "dkd" and base.data.fold == 0  # frozen: the base is unchanged
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.seed = 1
    with pytest.raises(UserError, match="out of range"):
        base.replace(fold=10)
    with pytest.raises(UserError, match="unknown option"):
        base.replace(epoch=3)


@pytest.mark.once
def test_differences_count_what_a_run_computes_not_where_files_live():
    a = RunOptions.from_flat(dataset="emodb", data_dir="/a", cache_dir="/c1", teacher=None)
    b = a.replace(data_dir="/b", cache_dir="/c2", manual_dir="/m", bundle_dir="/x")
    assert a.differences(b) == []
    c = a.replace(learning_rate=3e-3, split_seed=4)
    assert sorted(d.split()[0] for d in a.differences(c)) == ["learning_rate", "split_seed"]
    assert a.differences(c.to_dict())  # a config.json dict works too


@pytest.mark.once
@pytest.mark.parametrize(
    ("flat", "match"),
    [
        ({"variant": "mse"}, "unknown variant"),
        ({"beta": -1}, "beta must be >= 0"),
        ({"temperature": 0}, "temperature must be > 0"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"epochs": 2.5}, "epochs must be an integer"),
        ({"batch_size": 0}, "batch_size"),
        ({"learning_rate": float("nan")}, "learning_rate must be finite"),
        ({"select": "worst"}, "unknown selection"),
        ({"student_init": "teachers"}, "unknown student_init"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"seed": "3"}, "seed must be an integer"),
        ({"val_fraction": 1.0}, "val_fraction must be < 1"),
        ({"normalize": "yes"}, "normalize must be true or false"),
        ({"balance_classes": 1}, "balance_classes must be true or false"),
        ({"label_smoothing": 1.0}, "label_smoothing must be < 1"),
        ({"protocol": "kfold"}, "unknown protocol"),
        ({"protocol": "loso"}, "needs a fold"),
        ({"fold": 1}, "'loso' only"),
        ({"protocol": "loso", "fold": "speaker99"}, "unknown fold"),
        ({"max_utterances": 1}, "max_utterances must be >= 2"),
        ({"variant": "ce", "teacher": "t.keras"}, "trains without a teacher"),
        ({"learning_rat": 1e-3}, "unknown option 'learning_rat'"),
    ],
)
def test_bad_values_are_user_errors_naming_the_option(flat, match):
    with pytest.raises(UserError, match=match):
        RunOptions.from_flat(dataset="emodb", **flat)


@pytest.mark.once
@pytest.mark.parametrize("value", [[1, 2, 3], "options", None, 5])
def test_from_dict_refuses_what_is_not_an_options_object(value):
    with pytest.raises(UserError, match="must be a JSON object"):
        RunOptions.from_dict(value)


# ------------------------------------------------------------------------------------------
# named recipes
# ------------------------------------------------------------------------------------------


@pytest.mark.once
def test_named_recipes_start_the_options_and_explicit_values_win():
    from keras_dkd.recipes import RECIPES

    default = RunOptions.from_flat(dataset="emodb")
    assert default.recipe.name == "default" and default.recipe.learning_rate == 1e-3
    assert default.data.normalize is True and default.recipe.head_init == "per_head"
    assert default.recipe.select == "last"  # decided on held-out training speakers (#15)
    assert default.recipe.student_init == "teacher"  # decided on validation speakers (#15)
    paper = RunOptions.from_flat(dataset="emodb", recipe="paper")
    assert paper.recipe == Recipe()  # the dataclass defaults are the paper's recipe
    assert (paper.recipe.learning_rate, paper.recipe.weight_decay, paper.recipe.schedule) == (
        1e-4, 1e-6, "constant")
    assert paper.data.normalize is False and paper.data.padding == "zero"
    assert paper.recipe.select == "best" and paper.recipe.student_init == "random"
    headfusion = RunOptions.from_flat(dataset="emodb", recipe="headfusion", epochs=7)
    assert headfusion.recipe.schedule == "step" and headfusion.recipe.epochs == 7
    assert headfusion.data.drop_short is True
    # switching recipe in a variant takes all of its values
    assert default.replace(recipe="paper") == paper
    # config.json names the recipe and holds every value; reading it back changes nothing
    assert RunOptions.from_dict(headfusion.to_dict()) == headfusion
    assert headfusion.to_dict()["recipe"] == "headfusion"
    # the name is a label: same values, another name, same results
    assert default.differences(default.replace(recipe="paper").replace(**{
        k: v for k, v in RECIPES["default"].items()})) == []
    with pytest.raises(UserError, match="unknown recipe 'fast'"):
        RunOptions.from_flat(dataset="emodb", recipe="fast")


@pytest.mark.once
def test_recipe_schedules_warm_up_and_decay():
    from keras_dkd.schedules import RecipeSchedule

    def rates(schedule, steps):
        return [float(schedule(s)) for s in steps]

    cosine = RecipeSchedule(1e-3, steps_per_epoch=10, epochs=10, kind="cosine", warmup_epochs=2)
    assert rates(cosine, [0, 9, 19]) == pytest.approx([5e-5, 5e-4, 1e-3], rel=1e-5)
    assert rates(cosine, [60, 100]) == pytest.approx([5e-4, 0.0], abs=1e-9)
    step = RecipeSchedule(1e-3, 5, 50, kind="step", period=10, factor=0.1)
    assert rates(step, [0, 49, 50, 100]) == pytest.approx([1e-3, 1e-3, 1e-4, 1e-5], rel=1e-5)
    legacy = RecipeSchedule(1e-4, 5, 50, kind="inverse_time", decay=1e-6)
    assert rates(legacy, [1000]) == pytest.approx([1e-4 / (1 + 1e-3)], rel=1e-6)
    assert RecipeSchedule.from_config(cosine.get_config()).get_config() == cosine.get_config()
