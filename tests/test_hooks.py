"""One test per hook (named test_hook_<hook>), and a check that every hook is documented and tested."""

from __future__ import annotations

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


class ToyBackend:
    """A fake *plugin* (not a backend stand-in) used to check dispatch of the backend hooks."""

    name = "toy"

    @hookimpl
    def daqakd_register_backends(self, register):
        register(BackendInfo(name="toy", module="torch", distribution="torch", install="pip install torch",
                             weight_bits=(2, 8), act_bits=(2, 8)))

    @hookimpl
    def daqakd_quantize(self, request):
        if request.backend != "toy":
            return None
        q = _Toy()
        q.load_state_dict(request.model.state_dict())
        q.quantized_bits = request.config.weight_bits
        return q

    @hookimpl
    def daqakd_calibrate(self, request):
        if request.backend != "toy":
            return None
        request.model.calibrated_on = sum(len(b) for b in request.data)
        return request.model

    @hookimpl
    def daqakd_export(self, request):
        if request.backend != "toy":
            return None
        path = request.out_dir / "toy.pt"
        torch.save(request.model.state_dict(), path)
        m = request.model
        return [ExportedModel(format="torch-state", path=path, runtime="torch",
                              predict=lambda a: m(torch.from_numpy(a)).detach().numpy())]


def test_hook_daqakd_quantize(fresh_plugins):
    from daqakd_plugins import backends
    from daqakd_plugins.config import QuantConfig
    from daqakd_plugins.errors import ConfigError

    plugins.register_plugin(ToyBackend(), name="toy")
    fp = _Toy()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        q = backends.quantize(fp, "toy", QuantConfig(weight_bits=3, act_bits=4), example_input=torch.zeros(1, 4))
    assert q is not fp and q.quantized_bits == 3
    assert any("plain KD, not QAT" in str(x.message) for x in w)  # the toy inserts no quantizers
    with pytest.raises(ConfigError, match="outside what backend 'toy' supports"):
        backends.quantize(fp, "toy", QuantConfig(weight_bits=1, act_bits=4), example_input=torch.zeros(1, 4))
    # every implementation (the real adapters included) answers None for a backend that is not its own
    from daqakd_plugins.contracts import QuantizeRequest

    hook = plugins.get_plugin_manager().hook.daqakd_quantize

    none = hook(request=QuantizeRequest(backend="nobody", model=fp, config=QuantConfig(), example_input=torch.zeros(1, 4)))
    assert none is None


def test_hook_daqakd_calibrate(fresh_plugins):
    from daqakd_plugins import backends

    plugins.register_plugin(ToyBackend(), name="toy")
    m = _Toy()
    out = backends.calibrate(m, "toy", [torch.zeros(5, 4), torch.zeros(3, 4)])
    assert out is m and m.calibrated_on == 8


def test_hook_daqakd_export(fresh_plugins, tmp_path):
    from daqakd_plugins import backends

    plugins.register_plugin(ToyBackend(), name="toy")
    m = _Toy()
    res = backends.export(m, "toy", example_input=torch.zeros(1, 4), out_dir=tmp_path / "exp")
    assert len(res) == 1 and res[0].path.exists() and res[0].size_bytes > 0
    x = torch.rand(2, 4)
    assert torch.allclose(torch.from_numpy(res[0].predict(x.numpy())), m(x), atol=1e-6)


def test_hook_daqakd_count_quantizers(fresh_plugins):
    import brevitas.nn as qnn  # a real backend layer

    from daqakd_plugins.backends import count_quantizers

    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    assert count_quantizers(plain) == 0
    q = nn.Sequential(qnn.QuantConv2d(1, 4, 3, weight_bit_width=4), qnn.QuantReLU(bit_width=4))
    assert count_quantizers(q) > 0
