"""`logitls bench` runs end to end and reports what it promises (figures are for the README, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_reports_every_measurement(tiny_models):
    result = subprocess.run([sys.executable, "-m", "logitls", "bench", "--quick", "--json", "--model",
                             str(tiny_models["gpt2"])], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for key in ("cold_prefill_ms", "keystroke_ms", "short_step_ms", "mid_edit_ms", "keystroke_over_cold",
                "keystroke_over_short_step", "mid_edit_over_cold", "lens_cold_ms", "lens_end_edit_ms",
                "lens_mid_edit_ms", "lens_end_edit_over_cold", "healed_after_space_ms", "healed_in_word_ms",
                "healed_in_word_over_keystroke"):
        assert report[key] > 0, key
    assert report["greedy"]["identical"] is True  # logitls's loop produced generate()'s tokens
    assert report["greedy"]["logitls_tok_s"] > 0 and report["greedy"]["generate_tok_s"] > 0
    # decoding alone (first token to last), what the llama.cpp comparison takes on both sides
    assert report["greedy"]["decode_tok_s"] > 0
    exact = report["settings"]["exact float32"]
    assert exact["greedy"]["decode_tok_s"] > 0 and exact["greedy"]["identical"] is True
    lsp = report["lsp"]
    assert 0 < lsp["initialize_ms"] < lsp["first_completion_ms"]
    assert lsp["first_forward"] == "transformers"  # GPT-2: not a family of the native model
    assert lsp["lsp_keystroke_ms"] > 0 and lsp["peak_rss_mb"] > 0


def test_serve_does_not_import_torch_before_the_model_loads():
    code = ("import sys; from logitls.lsp.features import create_server; import logitls.cli; create_server(); "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.stdout.split() == ["False", "False"], result.stderr
