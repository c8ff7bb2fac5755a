import json
import os

import pytest

from sicref.config import (ConfigError, PRESETS, config_from_dict, config_to_dict,
                           load_config, preset, replace, save_config)


def test_paper_preset_is_spec_section_6():
    c = preset("paper")
    assert (c.data.batch_size, c.data.seq_len, c.data.vmax) == (130, 60, 0.15)
    assert (c.model.n_units, c.model.n_layers) == (128, 3)
    assert (c.loss.sigma_x, c.loss.sigma_g) == (0.05, 0.4)
    assert (c.loss.lambda_sep, c.loss.lambda_inv, c.loss.lambda_cap) == (1.0, 0.1, 0.5)
    assert (c.optim.lr, c.optim.clip_norm, c.optim.accumulation) == (2e-5, 0.1, 2)
    assert c.train.steps == 2_000_000


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_json(name, tmp_path):
    c = preset(name)
    save_config(c, tmp_path / "c.json")
    assert load_config(tmp_path / "c.json") == c
    assert config_from_dict(json.loads(json.dumps(config_to_dict(c)))) == c


INVALID = [
    ("data", "batch_size", 0), ("data", "batch_size", 2.5), ("data", "seq_len", -1),
    ("data", "seq_len_alt", -1),
    ("data", "vmax", 0.0), ("data", "mode", "shuffle"),
    ("model", "n_units", 0), ("model", "hidden", "wide"), ("model", "n_layers", 0),
    ("model", "norm_eps", -1.0),
    ("loss", "sigma_x", 0.0), ("loss", "sigma_g", float("nan")), ("loss", "lambda_sep", -1.0),
    ("loss", "lambda_inv", -0.1), ("loss", "lambda_cap", float("inf")),
    ("loss", "lambda_coniso", -1.0), ("loss", "reduction", "median"),
    ("loss", "method", "magic"),
    ("optim", "lr", 0.0), ("optim", "beta1", 1.0), ("optim", "beta2", -0.1),
    ("optim", "eps", 0.0), ("optim", "weight_decay", -1.0), ("optim", "clip_norm", -1.0),
    ("optim", "accumulation", 0), ("optim", "plateau_factor", 1.5),
    ("optim", "plateau_patience", -1), ("optim", "plateau_window", 0),
    ("optim", "plateau_threshold", -1.0), ("optim", "min_lr", -1.0),
    ("optim", "lr_half_life", -5), ("optim", "lr_half_life", 2.5),
    ("optim", "lr_drop_step", -1), ("optim", "lr_drop_factor", 0.0),
    ("optim", "lr_drop_factor", 1.5),
    ("optim", "anneal_lr", -1e-4), ("optim", "anneal_grid_fraction", 0.0),
    ("optim", "anneal_grid_fraction", 1.5), ("optim", "anneal_check_every", 0),
    ("optim", "anneal_steps", 0), ("optim", "anneal_walks", 0),
    ("optim", "anneal_walk_steps", 0),
    ("optim", "anneal_half_life", -1), ("optim", "anneal_half_life", 1.5),
    ("optim", "anneal_give_up", -500), ("optim", "anneal_give_up", 750),
    ("optim", "anneal_confirm", -1), ("optim", "anneal_confirm", 1.0),
    ("optim", "anneal_check_from", -1),
    ("train", "steps", 0), ("train", "seed", -1), ("train", "log_every", 0),
    ("train", "checkpoint_every", 0), ("train", "steps", True),
]


@pytest.mark.parametrize("section,field,value", INVALID)
def test_each_invalid_field_is_named_in_the_error(section, field, value):
    with pytest.raises(ConfigError, match=rf"{section}\.{field}"):
        replace(preset("tiny"), **{section: {field: value}})
    d = config_to_dict(preset("tiny"))
    d[section][field] = value
    with pytest.raises(ConfigError, match=rf"{section}\.{field}"):
        config_from_dict(d)


def test_give_up_comes_at_or_after_the_first_reading():
    with pytest.raises(ConfigError, match="optim.anneal_give_up"):
        replace(preset("tiny"), optim={"anneal_lr": 1e-3, "anneal_check_every": 5,
                                       "anneal_check_from": 20, "anneal_give_up": 15})
    replace(preset("tiny"), optim={"anneal_lr": 1e-3, "anneal_check_every": 5,
                                   "anneal_check_from": 20, "anneal_give_up": 20})


def test_annealing_cannot_be_combined_with_the_other_schedules():
    for other in ({"lr_drop_step": 10}, {"lr_half_life": 10}):
        with pytest.raises(ConfigError, match="optim.anneal_lr"):
            replace(preset("tiny"), optim={"anneal_lr": 1e-3, **other})


def test_unknown_fields_and_sections_are_refused():
    with pytest.raises(ConfigError, match="data.batchsize"):
        config_from_dict({"data": {"batchsize": 3}})
    with pytest.raises(ConfigError, match="modle"):
        config_from_dict({"modle": {}})
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("huge")


def test_bad_json_file_is_refused(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(p)


def test_example_configs_load():
    import glob

    from sicref.config import load_config

    paths = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "examples",
                                          "configs", "*.json")))
    assert len(paths) >= 2
    for path in paths:
        load_config(path)
