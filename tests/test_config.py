"""Configuration: presets, paper defaults, typed overrides, validation, safe YAML, and the CLI error path."""
from __future__ import annotations

import dataclasses
import json

import pytest

import smartlib.config as config
from smartlib.cli import main
from smartlib.config import PRESETS, ArchConfig, PretrainConfig, apply_overrides, config_from_json, parse_set, pretrain_config
from smartlib.errors import SmartError

PAPER = dict(arch="swin", img_size=128, embed_dim=48, depths=(2, 2, 8, 2), num_heads=(4, 4, 8, 16), window_size=4,
             drop_path=0.1, semantic_attention=True, sa_depth=2, layerscale=1e-4, mask_mode="attention", mask_ratio=0.7,
             hint_ratio=0.1, hint_top=0.1, teacher_drop=0.3, momentum=0.996, momentum_final=1.0, lr=8e-4, min_lr=1e-6,
             warmup=0.1, weight_decay=0.04, weight_decay_final=0.4, clip_grad=0.3, teacher_temp=0.04,
             teacher_temp_final=0.07, student_temp=0.1, center_momentum=0.9, w_amip=1.0, w_ampd=0.1, w_aitd=0.1,
             w_gitd=0.1, epochs=800, gitd_stage=4, hu_min=-500.0, hu_max=500.0, spacing=2.0, prototypes=8192,
             head_hidden=2048, head_bottleneck=256, head_layers=3, freeze_last_layer=1)


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load(name):
    cfg = pretrain_config(name)
    assert isinstance(cfg, PretrainConfig)
    assert isinstance(cfg.depths, tuple) and len(cfg.depths) == 4
    assert cfg.img_size % 32 == 0 and cfg.embed_dim % 12 == 0


def test_paper_preset_equals_spec_defaults():
    cfg = pretrain_config("paper")
    for k, v in PAPER.items():
        assert getattr(cfg, k) == v, k
    assert cfg.teacher_temp_warmup == pytest.approx(30 / 800)
    # the dataclass defaults themselves are the paper's
    d = PretrainConfig()
    for k, v in PAPER.items():
        assert getattr(d, k) == v, k


def test_smoke_preset_is_small():
    cfg = pretrain_config("smoke")
    assert cfg.embed_dim == 12 and cfg.depths == (1, 1, 1, 1) and cfg.num_heads == (1, 2, 4, 8) and cfg.img_size == 64


def test_model_kwargs_build_a_model():
    from smartlib.models import SMARTNet

    cfg = pretrain_config("smoke", {"img_size": "32", "prototypes": "8", "head_hidden": "8", "head_bottleneck": "4"})
    kw = cfg.model_kwargs()
    assert kw["use_checkpoint"] is False and kw["embed_dim"] == 12
    net = SMARTNet(heads=False, **kw)
    assert net.a.depths == (1, 1, 1, 1) and net.a.img_size == 32


def test_overrides_are_typed():
    cfg = pretrain_config("smoke", parse_set(["depths=2,2,2,2", "num_heads=[2, 2, 4, 4]", "semantic_attention=true",
                                              "amp=False", "lr=1e-3", "epochs=3", "teacher_noise=zero", "spacing=1"]))
    assert cfg.depths == (2, 2, 2, 2) and cfg.num_heads == (2, 2, 4, 4)
    assert cfg.semantic_attention is True and cfg.amp is False
    assert cfg.lr == 1e-3 and isinstance(cfg.lr, float)
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int)
    assert cfg.spacing == 1.0 and isinstance(cfg.spacing, float)
    assert cfg.teacher_noise == "zero"
    for s, expected in (("yes", True), ("0", False), ("NO", False), ("TRUE", True)):
        assert apply_overrides(PretrainConfig(), {"amp": s}).amp is expected


def test_overrides_do_not_mutate_input():
    cfg = pretrain_config("smoke")
    new = apply_overrides(cfg, {"lr": 0.1})
    assert new.lr == 0.1 and cfg.lr != 0.1


def test_parse_set():
    assert parse_set(["a=1", " b = x=y "]) == {"a": "1", "b": "x=y"}
    with pytest.raises(SmartError, match="key=value"):
        parse_set(["novalue"])


def test_unknown_key_named():
    with pytest.raises(SmartError, match="nope"):
        pretrain_config("smoke", {"nope": 1})


@pytest.mark.parametrize("key,value", [("epochs", "abc"), ("epochs", "1.5"), ("epochs", True), ("lr", "fast"),
                                       ("amp", "maybe"), ("depths", "a,b"), ("depths", "5"), ("arch", True),
                                       ("semantic_attention", 2)])
def test_bad_type_named(key, value):
    with pytest.raises(SmartError, match=key):
        apply_overrides(PretrainConfig(), {key: value})


@pytest.mark.parametrize("key,value", [("mask_ratio", 1.5), ("mask_ratio", 0.0), ("teacher_drop", 1.0), ("img_size", 48),
                                       ("embed_dim", 20), ("arch", "cnn"), ("mask_mode", "given"), ("mask_mode", "zz"),
                                       ("teacher_noise", "blur"), ("epochs", 0), ("batch_size", 0), ("lr", 0.0),
                                       ("warmup", 1.0), ("momentum", 1.5), ("gitd_stage", 2), ("seed", -1),
                                       ("depths", "2,2,2"), ("num_heads", "1,2,4"), ("cache", "disk"),
                                       ("max_steps", -5), ("num_workers", -1), ("log_every", 0), ("device", "tpu"),
                                       ("device", "cuda:x"), ("device", "CPU"), ("device", "cuda:")])
def test_invalid_value_named(key, value):
    with pytest.raises(SmartError, match=key):
        apply_overrides(PretrainConfig(), {key: value})


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_values_accepted_when_built(device):
    # building (or reading a run's config.json) checks the form only: a GPU run stays readable on a CPU machine
    assert apply_overrides(PretrainConfig(), {"device": device}).device == device


def test_validate_checks_the_device_on_this_machine(monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("auto", "cpu"):
        PretrainConfig(device=device).validate()
    for device in ("cuda", "cuda:1"):
        with pytest.raises(SmartError, match=rf"device='{device}': no CUDA device on this machine"):
            PretrainConfig(device=device).validate()
    p = tmp_path / "config.json"
    p.write_text(json.dumps(PretrainConfig(device="cuda").to_dict()))
    assert config_from_json(p).device == "cuda"  # readable, e.g. to export a GPU run on a laptop
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    PretrainConfig(device="cuda:1").validate()
    with pytest.raises(SmartError, match=r"device='cuda:2': this machine has 2 CUDA devices"):
        PretrainConfig(device="cuda:2").validate()


def test_new_checks_keep_every_default():
    d = PretrainConfig()
    assert (d.max_steps, d.num_workers, d.log_every, d.device) == (0, 0, 1, "auto")
    for name in PRESETS:
        pretrain_config(name).validate()


def test_attention_masking_needs_semantic_attention():
    with pytest.raises(SmartError, match="semantic_attention"):
        apply_overrides(PretrainConfig(), {"semantic_attention": "false"})
    with pytest.raises(SmartError, match="semantic_attention"):
        apply_overrides(PretrainConfig(), {"semantic_attention": False, "mask_mode": "low_attention"})
    cfg = apply_overrides(PretrainConfig(), {"semantic_attention": False, "mask_mode": "random"})
    assert cfg.semantic_attention is False


def test_sa_heads_must_divide_width():
    with pytest.raises(SmartError, match="sa_heads"):
        apply_overrides(PretrainConfig(), {"sa_heads": 7})


def test_unknown_preset():
    with pytest.raises(SmartError, match="huge"):
        pretrain_config("huge")


def test_preset_yaml_uses_safe_load(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    # under an unsafe loader this would run `touch` (and yield lr: 0); safe_load must refuse the tag
    (tmp_path / "smoke.yaml").write_text(f'lr: !!python/object/apply:os.system ["touch {marker}"]\n')
    monkeypatch.setattr(config, "_PRETRAIN_CONFIG_DIR", tmp_path)
    with pytest.raises(SmartError, match="smoke.yaml"):
        pretrain_config("smoke")
    assert not marker.exists()


def test_preset_yaml_not_a_mapping_or_unknown_key(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "_PRETRAIN_CONFIG_DIR", tmp_path)
    (tmp_path / "cpu.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(SmartError, match="cpu.yaml"):
        pretrain_config("cpu")
    (tmp_path / "cpu.yaml").write_text("lr: [unclosed\n")
    with pytest.raises(SmartError, match="cpu.yaml"):
        pretrain_config("cpu")
    (tmp_path / "cpu.yaml").write_text("bogus_key: 3\n")
    with pytest.raises(SmartError, match="bogus_key"):
        pretrain_config("cpu")
    (tmp_path / "cpu.yaml").write_text("")  # empty preset = paper defaults
    assert pretrain_config("cpu") == PretrainConfig()
    (tmp_path / "cpu.yaml").write_text("lr: 0.5\ndepths: [1, 1, 1, 1]\n")
    cfg = pretrain_config("cpu", {"lr": "0.25"})  # overrides win over the file
    assert cfg.lr == 0.25 and cfg.depths == (1, 1, 1, 1)


def test_config_json_roundtrip(tmp_path):
    cfg = pretrain_config("smoke", {"lr": "0.002"})
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg.to_dict()))
    back = config_from_json(p)
    assert back == cfg
    assert dataclasses.asdict(back) == dataclasses.asdict(cfg)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SmartError, match="bad.json"):
        config_from_json(tmp_path / "bad.json")
    with pytest.raises(SmartError, match="missing.json"):
        config_from_json(tmp_path / "missing.json")


def test_cli_bad_set_prints_one_error_line(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["pretrain", "--preset", "smoke", "--out", str(out), "--set", "nope=1"])
    captured = capsys.readouterr()
    assert rc == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "nope" in lines[0]
    assert not out.exists()  # nothing written before the configuration was validated


#: config.json's keys in order: runs compare it byte for byte, so the field order must not change
CONFIG_KEYS = ("data n_volumes phantom_shape data_seed spacing hu_min hu_max cache num_workers prefetch arch img_size "
               "embed_dim depths num_heads window_size drop_path semantic_attention sa_depth sa_heads layerscale vit_hidden "
               "vit_layers vit_heads prototypes head_hidden head_bottleneck head_layers gitd_stage grad_checkpoint "
               "fast_attention mask_mode mask_ratio hint_ratio hint_top given_attention teacher_drop teacher_noise "
               "clean_attention momentum momentum_final w_amip w_ampd w_aitd w_gitd student_temp teacher_temp "
               "teacher_temp_final teacher_temp_warmup center_momentum epochs batch_size lr min_lr warmup weight_decay "
               "weight_decay_final clip_grad clip_mode freeze_last_layer amp fused_optimizer threads compile seed device "
               "ckpt_every log_every max_steps init_from").split()


def test_config_field_order_is_stable():
    assert list(PretrainConfig().to_dict()) == CONFIG_KEYS


def test_model_fields_are_the_architecture_fields_with_its_defaults():
    from smartlib.models.smart import ARCH_FIELDS, SMARTNet

    arch, cfg = ArchConfig(), PretrainConfig()
    model_fields = [f.name for f in dataclasses.fields(PretrainConfig) if f.name in ARCH_FIELDS]
    assert model_fields == [k for k in ARCH_FIELDS if k not in ("in_chans", "use_checkpoint")]
    for k in model_fields:
        assert getattr(cfg, k) == getattr(arch, k), k
    assert cfg.grad_checkpoint == arch.use_checkpoint
    kw = cfg.model_kwargs()
    assert list(kw) == [*model_fields, "use_checkpoint"]
    assert SMARTNet(heads=False, **{**kw, "img_size": 32}).arch_kwargs == {**dataclasses.asdict(arch), "img_size": 32}


def test_pretrain_config_files_keep_their_comments():
    for name in PRESETS:
        text = (config._PRETRAIN_CONFIG_DIR / f"{name}.yaml").read_text()
        assert text.startswith("# "), name
