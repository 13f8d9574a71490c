"""Config values are checked against the dataclass annotations, wherever they come from."""

import pytest

from gpuclust.config import PipelineConfig
from gpuclust.errors import UsageError


@pytest.mark.parametrize("toml, message", [
    ('[cluster]\nk = "eight"', "cluster.k = 'eight' has the wrong type: expected an integer"),
    ("[cluster]\nk = 2.5", "cluster.k = 2.5 has the wrong type: expected an integer"),
    ("[cluster]\nk = true", "cluster.k = True has the wrong type: expected an integer"),
    ("[cluster]\nk = [8]", "cluster.k = [8] has the wrong type"),
    ("[cluster]\nk = {n = 8}", "cluster.k = {'n': 8} has the wrong type"),
    ('[cluster]\nk_values = "4-16"', "cluster.k_values = '4-16' has the wrong type: expected a list of integers"),
    ('[cluster]\nk_values = [4, "5"]', "expected a list of integers"),
    ('[cluster]\nmin_samples = "3"', "cluster.min_samples = '3' has the wrong type: expected an integer"),
    ('[cluster]\ntol = "small"', "cluster.tol = 'small' has the wrong type: expected a number"),
    ('seed = "x"', "seed = 'x' has the wrong type: expected an integer"),
    ("seed = false", "seed = False has the wrong type: expected an integer"),
    ("device = 3", "device = 3 has the wrong type: expected a string"),
    ("columns = 3", "config value columns = 3 has the wrong type: expected a table of settings"),
    ("[preprocess]\nevent_weights = [1, 2]", "expected a table of name = number pairs"),
    ('[preprocess]\nevent_weights = { view = "a" }', "expected a table of name = number pairs"),
    ('[preprocess]\ndrop_duplicates = "yes"', "drop_duplicates = 'yes' has the wrong type: expected true or false"),
    ("[preprocess]\nmin_user_events = 1.5", "min_user_events = 1.5 has the wrong type: expected an integer"),
    ("[features]\nweights = [1, 2]", "features.weights = [1, 2] has the wrong type"),
    ('[features]\nfeatures = "behaviour"', "features.features = 'behaviour' has the wrong type: expected a list of"),
    ("[features]\ntext = 3", "features.text = 3 has the wrong type: expected a table"),
    ('[columns]\ntext = "title"', "columns.text = 'title' has the wrong type: expected a list of strings"),
    ("[features.weights]\nbehavior = 1", "unknown name 'behavior' for a feature weight: choose from behaviour, tfidf"),
])
def test_toml_values_of_the_wrong_type_name_key_value_and_type(tmp_path, toml, message):
    path = tmp_path / "run.toml"
    path.write_text(toml + "\n")
    with pytest.raises(UsageError) as err:
        PipelineConfig.from_toml(path).validate()
    assert message in str(err.value)


def test_whole_numbers_where_floats_are_wanted_and_lists_for_tuples_are_accepted(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[cluster]\ntol = 1\nk_values = [4, 6]\n[features]\nfeatures = ["behaviour"]\n')
    config = PipelineConfig.from_toml(path).validate()
    assert config.cluster.tol == 1.0 and isinstance(config.cluster.tol, float)
    assert config.cluster.k_values == (4, 6) and config.features.features == ("behaviour",)


def test_a_saved_config_loads_back_unchanged():
    config = PipelineConfig(seed=7)
    config.cluster.min_samples = 4
    assert PipelineConfig.from_dict(config.to_dict()) == config


def test_bool_is_not_an_int_in_a_python_config():
    config = PipelineConfig()
    config.cluster.k = True
    with pytest.raises(UsageError, match="cluster.k = True has the wrong type: expected an integer"):
        config.validate()


def test_toml_that_is_not_utf8_is_a_clear_error_and_a_bom_is_fine(tmp_path):
    path = tmp_path / "run.toml"
    path.write_bytes(b"seed = 1\n# caf\xe9\n")
    with pytest.raises(UsageError, match="not UTF-8 text .*save it as UTF-8"):
        PipelineConfig.from_toml(path)
    path.write_bytes(b"\xef\xbb\xbfseed = 1\n")
    assert PipelineConfig.from_toml(path).seed == 1
    with pytest.raises(UsageError, match="is a directory"):
        PipelineConfig.from_toml(tmp_path)


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seeds_must_fit_32_bits(seed):
    with pytest.raises(UsageError, match=r"--seed \(seed\) must be between 0 and 4294967295"):
        PipelineConfig(seed=seed).validate()


def test_one_column_cannot_take_two_roles():
    config = PipelineConfig()
    config.columns.timestamp = "value"
    with pytest.raises(UsageError, match="column 'value' is mapped to both timestamp and value"):
        config.validate()


@pytest.mark.parametrize("section, weights, message", [
    ("preprocess", {"view": 0.0, "click": 0.0}, "no event weight is positive"),
    ("preprocess", {"view": -1.0, "click": 2.0}, "event weight view=-1.0 must be a finite number >= 0"),
    ("preprocess", {"view": float("nan")}, "event weight view=nan must be"),
    ("features", {"behaviour": 1.0, "tfidf": float("inf")}, "feature weight tfidf=inf must be"),
    ("features", {"behavior": 1.0}, "unknown name 'behavior' for a feature weight: choose from behaviour, tfidf, text"),
    ("features", {"behaviour": 0.0, "tfidf": 0.0, "text": 1.0}, "every selected feature has weight 0"),
])
def test_weights_must_be_finite_non_negative_and_named(section, weights, message):
    config = PipelineConfig()
    if section == "preprocess":
        config.preprocess.event_weights = weights
    else:
        config.features.weights = weights
    with pytest.raises(UsageError) as err:
        config.validate()
    assert message in str(err.value)


@pytest.mark.parametrize("toml, message", [
    ("[assess]\nmap_sample = -1", "assess.map_sample must be at least 1, got -1"),
    ("[assess]\ntop_n = 0", "assess.top_n must be at least 1, got 0"),
    ("[cluster]\ntol = -1", "cluster.tol must be at least 0"),
    ("[preprocess]\nsession_gap_minutes = 0", "session_gap_minutes must be above 0 and at most"),
    ("[preprocess]\nsession_gap_minutes = nan", "session_gap_minutes must be above 0 and at most"),
    ("[preprocess]\nsession_gap_minutes = 1e308", "at most 525,600 minutes"),
    ("[preprocess]\nmin_user_events = 100000000000", "at most 2,147,483,647"),
    ("[features]\nsvd_power_iterations = -1", "features.svd_power_iterations must be at least 0"),
    ("[features]\nsvd_oversamples = -3", "features.svd_oversamples must be at least 0"),
    ("[features.weights]\ntfidf = 1e7", r"feature weight tfidf=1e\+07 is over 1e\+06"),
])
def test_impossible_numbers_in_a_config_name_the_setting_and_its_bound(tmp_path, toml, message):
    path = tmp_path / "run.toml"
    path.write_text(toml + "\n")
    with pytest.raises(UsageError, match=message):
        PipelineConfig.from_toml(path).validate()


def test_a_feature_named_twice_is_refused():
    config = PipelineConfig()
    config.features.features = ("tfidf", "behaviour", "tfidf")
    with pytest.raises(UsageError, match="names tfidf twice; give each feature once"):
        config.validate()
