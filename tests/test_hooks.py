"""One test per hook (named test_hook_<hook>), and a check that every hook is documented and tested."""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from daqakd_plugins import hookimpl, hookspecs, plugins
from daqakd_plugins.contracts import (
    Augmentation,
    BackendInfo,
    ExportedModel,
    LossComponent,
    LossContext,
    LossPreset,
    LossResult,
    LossTerm,
    Metric,
    MetricResult,
)
from daqakd_plugins.errors import PluginError

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(n for n in dir(hookspecs) if n.startswith("daqakd_"))


def test_every_hook_is_documented():
    doc = (ROOT / "docs" / "hooks.md").read_text()
    documented = set(re.findall(r"^##+\s+`?(daqakd_\w+)", doc, flags=re.M))
    assert HOOKS, "no hooks found"
    missing = [h for h in HOOKS if h not in documented]
    assert not missing, f"hooks missing a section in docs/hooks.md: {missing}"
    stale = documented - set(HOOKS)
    assert not stale, f"docs/hooks.md documents hooks that do not exist: {sorted(stale)}"


def _sections(doc: str) -> dict[str, str]:
    """The text of each hook's section of docs/hooks.md, by hook name."""
    heads = list(re.finditer(r"^(#+)\s+`?(daqakd_\w+)`?\s*$", doc, flags=re.M))
    out = {}
    for m in heads:
        nxt = re.compile(r"^#{1," + str(len(m.group(1))) + r"}\s", flags=re.M).search(doc, m.end())
        out[m.group(2)] = doc[m.end(): nxt.start() if nxt else len(doc)]
    return out


def _documented_argnames(hook: str, section: str) -> list[str] | None:
    """The argument names of the signature `` `hook(a: T, b) -> R` `` that opens the hook's section."""
    m = re.search("`" + re.escape(hook) + r"\(([^`]*?)\)(?:\s*->[^`]*)?`", section)
    if m is None:
        return None
    args, depth, cur = [], 0, ""
    for ch in m.group(1) + ",":
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            if cur.strip():
                args.append(re.split(r"[:=]", cur)[0].strip().lstrip("*"))
            cur = ""
        else:
            cur += ch
    return args


def test_every_documented_signature_matches_the_spec():
    """Each hook's section opens with its signature, `` `daqakd_hook(arg: Type, ...) -> Result` ``, naming
    exactly the spec's arguments in the spec's order (datasette's tests/test_docs.py does the same)."""
    import pluggy

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    sections = _sections((ROOT / "docs" / "hooks.md").read_text())
    checked, wrong = 0, []
    for h in HOOKS:
        if h not in sections:
            continue  # test_every_hook_is_documented names it
        spec = getattr(pm.hook, h).spec
        assert spec is not None, h
        documented = _documented_argnames(h, sections[h])
        if documented is None:
            wrong.append(f"{h}: its section has no `{h}(...)` signature")
        elif documented != list(spec.argnames):
            wrong.append(f"{h}: docs/hooks.md says ({', '.join(documented)}), the spec takes ({', '.join(spec.argnames)})")
        checked += 1
    assert checked, "no hook section found in docs/hooks.md"
    assert not wrong, "docs/hooks.md signatures differ from daqakd_plugins/hookspecs.py:\n" + "\n".join(wrong)


def test_every_hook_has_its_own_test():
    sources = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    missing = [h for h in HOOKS if f"def test_hook_{h}(" not in sources]
    assert not missing, f"hooks without a test named test_hook_<hook>: {missing}"


def test_every_hook_spec_is_documented_in_code():
    for h in HOOKS:
        assert (getattr(hookspecs, h).__doc__ or "").strip(), h


def test_hook_daqakd_register_augmentations(fresh_plugins):
    class P:
        @hookimpl
        def daqakd_register_augmentations(self, register):
            register(Augmentation(name="test-invert", fn=lambda x, t: (1 - x, t)))

    plugins.register_plugin(P(), name="p")
    augs = plugins.get_augmentations()
    assert "none" in augs and "test-invert" in augs
    x = torch.rand(2, 1, 4, 4)
    y, _ = augs["test-invert"](x, torch.eye(2))
    assert torch.allclose(y, 1 - x)


def test_hook_daqakd_register_search_spaces(fresh_plugins):
    from daqakd_plugins.augment import resolve_augmentation
    from daqakd_plugins.contracts import SearchSpace

    class P:
        @hookimpl
        def daqakd_register_search_spaces(self, register):
            register(SearchSpace(name="scale", policy=lambda s: Augmentation(name=f"x{s}", fn=lambda x: x * (s + 1)),
                                 description="brightness times seed+1"))

    plugins.register_plugin(P(), name="p")
    spaces = plugins.get_search_spaces()
    assert {"taw2", "taw3", "scale"} <= set(spaces)
    aug = resolve_augmentation("search:scale:2")  # the policy from its name alone, renamed
    assert aug.name == "search:scale:2"
    x = torch.rand(2, 1, 4, 4)
    assert torch.allclose(aug(x, torch.eye(2))[0], 3 * x)
    assert plugins.registered_by()["search_spaces"]["scale"] == "p"
    with pytest.raises(ValueError, match="free of ':'"):
        SearchSpace(name="a:b", policy=lambda s: aug)


def test_hook_daqakd_register_architectures(fresh_plugins):
    from daqakd_plugins.contracts import Architecture
    from daqakd_plugins.models import arch_spec, build_model

    class P:
        @hookimpl
        def daqakd_register_architectures(self, register):
            register(Architecture(name="tiny:", build=lambda spec: nn.Sequential(
                nn.Flatten(), nn.Linear(spec["in_channels"] * 4 * 4, spec["num_classes"]))))

    plugins.register_plugin(P(), name="p")
    archs = plugins.get_architectures()
    assert {"small_resnet", "torchvision:", "timm:", "tiny:"} <= set(archs)
    m = build_model(arch_spec("tiny:any", num_classes=7, in_channels=2))  # the family gets every member name
    assert m(torch.rand(3, 2, 4, 4)).shape == (3, 7)


def test_hook_daqakd_register_metrics(fresh_plugins):
    class Acc:
        def __init__(self, num_classes):
            self.n = 0

        def update(self, batch):
            self.n += len(batch.logits)

        def result(self):
            return MetricResult(score=float(self.n), n=self.n)

    class P:
        @hookimpl
        def daqakd_register_metrics(self, register):
            register(Metric(name="count", create=Acc))

    plugins.register_plugin(P(), name="p")
    m = plugins.get_metrics()["count"]
    acc = m.create(10)
    from daqakd_plugins.contracts import MetricBatch

    acc.update(MetricBatch(logits=torch.zeros(3, 10), targets=torch.zeros(3, 10)))
    assert acc.result().score == 3.0

    class Wrong:
        @hookimpl
        def daqakd_register_metrics(self, register):
            register("not a metric")

    plugins.register_plugin(Wrong(), name="wrong")
    with pytest.raises(PluginError, match="'wrong'.*expected Metric"):
        plugins.get_metrics()


def test_hook_daqakd_register_losses(fresh_plugins):
    class P:
        @hookimpl
        def daqakd_register_losses(self, register):
            register(LossComponent(name="l1-logits", fn=lambda ctx: (ctx.student_logits - ctx.teacher_logits).abs().mean()))
            register(LossPreset(name="l1-only", terms=(LossTerm(component="l1-logits", weight=0.5),)))

    plugins.register_plugin(P(), name="p")
    assert "l1-logits" in plugins.get_loss_components()
    assert plugins.get_loss_presets()["l1-only"].terms[0].weight == 0.5


def test_hook_daqakd_compute_loss(fresh_plugins):
    calls = []

    class Base:
        @hookimpl(tryfirst=True)
        def daqakd_compute_loss(self, ctx):
            calls.append("base")
            return LossResult(terms={"base": ctx.student_logits.sum()})

    class Outer:
        @hookimpl(wrapper=True)
        def daqakd_compute_loss(self, ctx):
            calls.append("outer-before")
            result = yield
            result.terms["reg"] = torch.tensor(10.0)
            calls.append("outer-after")
            return result

    class Reweight:
        @hookimpl(wrapper=True, tryfirst=True)
        def daqakd_compute_loss(self, ctx):
            result = yield
            result.terms["base"] = result.terms["base"] * 2
            return result

    for obj, name in ((Base(), "base"), (Outer(), "outer"), (Reweight(), "reweight")):
        plugins.register_plugin(obj, name=name)
    ctx = LossContext(student_logits=torch.ones(2, 3), teacher_logits=None, targets=torch.zeros(2, 3))
    res = plugins.get_plugin_manager().hook.daqakd_compute_loss(ctx=ctx)
    assert calls == ["outer-before", "base", "outer-after"]
    assert float(res.total) == pytest.approx(2 * 6.0 + 10.0)


def test_hook_daqakd_register_backends(fresh_plugins):
    names = set(plugins.get_backends())
    assert {"nncf", "brevitas", "pytorch-quantization", "modelopt"} <= names
    for info in plugins.get_backends().values():
        assert info.install.startswith("pip install") and info.module and info.distribution


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyOptions:
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.scale <= 0:
            raise ValueError("toy option scale must be > 0")


class ToyBackend:
    """A fake *plugin* (not a backend stand-in) used to check dispatch of the backend hooks. It never
    looks at ``request.backend``: the core calls it only for the backend it registered."""

    name = "toy"

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def daqakd_register_backends(self, register):
        register(BackendInfo(name="toy", module="torch", distribution="torch", install="pip install torch",
                             weight_bits=(2, 8), act_bits=(2, 8), bits_note="Toy needs at least 2 bits.",
                             options_type=ToyOptions))

    @hookimpl
    def daqakd_quantize(self, request):
        self.calls.append(f"quantize:{request.backend}")
        q = _Toy()
        q.load_state_dict(request.model.state_dict())
        q.quantized_bits = request.config.weight_bits
        q.options = request.options
        return q

    @hookimpl
    def daqakd_calibrate(self, request):
        request.model.calibrated_on = sum(len(b) for b in request.data)
        return request.model

    @hookimpl
    def daqakd_export(self, request):
        path = request.out_dir / "toy.pt"
        torch.save(request.model.state_dict(), path)
        m = request.model
        return [ExportedModel(format="torch-state", path=path, runtime="torch",
                              predict=lambda a: m(torch.from_numpy(a)).detach().numpy())]

    @hookimpl
    def daqakd_save_student(self, request):
        return {"toy_state": request.model.state_dict(), "bits": request.config.weight_bits}

    @hookimpl
    def daqakd_restore_student(self, request):
        q = _Toy()
        q.load_state_dict(request.payload["toy_state"])
        q.quantized_bits = request.payload["bits"]
        return q


class Bystander:
    """Another backend's plugin: it must never see the toy backend's calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def daqakd_register_backends(self, register):
        register(BackendInfo(name="other", module="torch", distribution="torch", install="pip install torch"))

    @hookimpl
    def daqakd_quantize(self, request):
        self.calls.append(f"quantize:{request.backend}")
        return nn.Identity()

    @hookimpl
    def daqakd_calibrate(self, request):
        self.calls.append("calibrate")
        return nn.Identity()

    @hookimpl
    def daqakd_export(self, request):
        self.calls.append("export")
        return []


def test_hook_daqakd_quantize(fresh_plugins):
    from daqakd_plugins import backends
    from daqakd_plugins.config import QuantConfig
    from daqakd_plugins.errors import ConfigError

    toy, other = ToyBackend(), Bystander()
    plugins.register_plugin(toy, name="toy")
    plugins.register_plugin(other, name="bystander")
    fp = _Toy()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        q = backends.quantize(fp, "toy", QuantConfig(weight_bits=3, act_bits=4, options={"scale": 2.0}),
                              example_input=torch.zeros(1, 4))
    assert q is not fp and q.quantized_bits == 3
    assert q.options == ToyOptions(scale=2.0)  # the dict became the backend's typed options
    assert any("plain KD, not QAT" in str(x.message) for x in w)  # the toy inserts no quantizers
    # the call reached its owner only; the other backend's plugin saw nothing, and vice versa
    assert toy.calls == ["quantize:toy"] and other.calls == []
    backends.quantize(fp, "other", QuantConfig(), example_input=torch.zeros(1, 4))
    assert toy.calls == ["quantize:toy"] and other.calls == ["quantize:other"]
    assert plugins.backend_owner("toy") == "toy" and plugins.backend_owner("other") == "bystander"
    # the core checks the registered range once, with the adapter's reason
    with pytest.raises(ConfigError, match=r"weight bits 1 are outside what backend 'toy' supports \(2\.\.8\)\. "
                                          r"Toy needs at least 2 bits\. Pass a value from 2 to 8"):
        backends.quantize(fp, "toy", QuantConfig(weight_bits=1, act_bits=4), example_input=torch.zeros(1, 4))
    with pytest.raises(ConfigError, match=r"unknown toy option\(s\) \['scal'\]; known: scale"):
        backends.quantize(fp, "toy", QuantConfig(options={"scal": 2}), example_input=torch.zeros(1, 4))
    with pytest.raises(ValueError, match="toy option scale must be > 0"):  # the adapter's own message
        backends.quantize(fp, "toy", QuantConfig(options={"scale": -1}), example_input=torch.zeros(1, 4))
    assert toy.calls == ["quantize:toy"]  # nothing reached the adapter on bad input


def test_hook_daqakd_calibrate(fresh_plugins):
    from daqakd_plugins import backends

    other = Bystander()
    plugins.register_plugin(ToyBackend(), name="toy")
    plugins.register_plugin(other, name="bystander")
    m = _Toy()
    out = backends.calibrate(m, "toy", [torch.zeros(5, 4), torch.zeros(3, 4)])
    assert out is m and m.calibrated_on == 8 and other.calls == []


def test_hook_daqakd_export(fresh_plugins, tmp_path):
    from daqakd_plugins import backends

    other = Bystander()
    plugins.register_plugin(ToyBackend(), name="toy")
    plugins.register_plugin(other, name="bystander")
    m = _Toy()
    res = backends.export(m, "toy", example_input=torch.zeros(1, 4), out_dir=tmp_path / "exp")
    assert len(res) == 1 and res[0].path.exists() and res[0].size_bytes > 0
    x = torch.rand(2, 4)
    assert torch.allclose(torch.from_numpy(res[0].predict(x.numpy())), m(x), atol=1e-6)
    assert other.calls == []


def test_hook_daqakd_save_student(fresh_plugins):
    from daqakd_plugins import backends
    from daqakd_plugins.config import QuantConfig

    plugins.register_plugin(ToyBackend(), name="toy")
    plugins.register_plugin(Bystander(), name="bystander")
    m = _Toy()
    payload = backends.save_student(m, "toy", QuantConfig(weight_bits=5))
    assert set(payload) == {"toy_state", "bits"} and payload["bits"] == 5
    # a backend whose adapter has no save hook gets the core's default: the state_dict
    assert set(backends.save_student(nn.Linear(2, 2), "other", QuantConfig())) == {"state_dict"}


def test_hook_daqakd_restore_student(fresh_plugins):
    from daqakd_plugins import backends
    from daqakd_plugins.config import QuantConfig

    plugins.register_plugin(ToyBackend(), name="toy")
    torch.manual_seed(0)
    trained = _Toy()
    payload = backends.save_student(trained, "toy", QuantConfig(weight_bits=6))
    fresh = _Toy()  # other weights: restore must not depend on them
    r = backends.restore_student(fresh, "toy", QuantConfig(weight_bits=6), payload, example_input=torch.zeros(1, 4))
    x = torch.rand(3, 4)
    assert torch.equal(r(x), trained(x)) and r.quantized_bits == 6 and not r.training


def test_hook_daqakd_describe_quantizers(fresh_plugins):
    import brevitas.nn as qnn  # a real backend layer

    from daqakd_plugins.backends import count_quantizers, describe_quantizers

    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    assert count_quantizers(plain) == 0
    q = nn.Sequential(qnn.QuantConv2d(1, 4, 3, weight_bit_width=4), qnn.QuantReLU(bit_width=3))
    described = describe_quantizers(q)
    assert sorted((d.role, d.bits) for d in described) == [("activation", 3), ("weight", 4)]
    assert count_quantizers(q) == 2


def test_hook_daqakd_unwrap_output(fresh_plugins):
    import brevitas.nn as qnn

    from daqakd_plugins.models import as_tensor

    m = nn.Sequential(qnn.QuantIdentity(bit_width=8, return_quant_tensor=True)).eval()
    x = torch.rand(2, 3)
    out = m(x)
    assert not isinstance(out, torch.Tensor)  # a Brevitas QuantTensor
    t = as_tensor(out)
    assert isinstance(t, torch.Tensor) and torch.equal(t, out.value)

    class Unknown:
        pass

    with pytest.raises(Exception, match="daqakd needs logits as a tensor"):
        as_tensor(Unknown())
