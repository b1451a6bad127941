"""Forgetting methods are a registry: a new method is one function and one line, and the config, the
CLI and the report take it from there."""
import json

import torch

from lure_fast import config as C
from lure_fast import methods as M
from lure_fast.cli import main, parser


def test_every_method_has_one_entry_read_by_config_cli_and_report():
    assert list(M.METHODS) == ["bl", "lure", "sp", "llf", "fc", "cold"]
    method_field = next(f for f in C.fields() if f.name == "method")
    assert method_field.metadata["choices"] is M.METHODS
    run_help = parser()._subparsers._group_actions[0].choices["run"].format_help()
    assert "{bl,lure,sp,llf,fc,cold}" in run_help
    assert M.method_label({"method": "lure", "importance": "snip", "reinit_fraction": 0.2}) == "LURE (SNIP, 20 %)"
    assert M.method_label({"method": "sp"}) == "S&P"


def test_a_new_method_is_one_function_and_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(M.METHODS, "halve", None)  # so the registration below is undone after the test
    seen = []

    # -- the whole of a new method --------------------------------------------------------------
    @M.register("halve", "Halve the classifier")
    def halve(model, step):
        with torch.no_grad():
            M.classifier(model).weight.mul_(0.5)
        seen.append(step.megabatch)
        return M.classifier(model).weight.numel()
    # -----------------------------------------------------------------------------------------

    out = tmp_path / "cmp"
    assert main(["compare", "--methods", "bl,halve", "--preset", "tiny", "--quiet", "--out", str(out)]) == 0
    res = json.loads((out / "halve" / "results.json").read_text())
    assert res["config"]["method"] == "halve" and seen == [1]  # forgets between the two mega-batches only
    assert res["megabatches"][0]["reset"] == 64 * 10  # the tiny preset's classifier: 64 features x 10 classes
    assert "| Halve the classifier |" in (out / "table.md").read_text()
