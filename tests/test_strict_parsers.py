"""Two of lab-02's support parsers at their edges (ungraded): the strict YAML loader and the Prometheus
text parser the tests and the evidence probe read ``/metrics`` with."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pdpair.load.client import metric_sum, parse_metrics
from pdpair.pair.spec import SpecError, load_pair_spec
from pdpair.proxy.metrics import Metrics

pytestmark = pytest.mark.ungraded


def write(tmp_path, text: str):
    path = tmp_path / "pair.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text",
    [
        "model: m\nport: 8100\nprefill: {port: 1, port: 2}\n",  # a flow mapping: both keys on one line
        "model: m\nport: 8100\nprefill: {port: 1,\n  port: 2}\n",  # a flow mapping over two lines
        "{model: m, port: 8100, port: 8101}\n",  # the top level in flow style
        "model: m\nport: 8100\nprefill:\n  port: 1\n  port: 2\n",  # block style (it was caught before)
    ],
)
def test_a_duplicate_key_is_refused_in_flow_and_block_mappings(tmp_path, text):
    with pytest.raises(SpecError, match="duplicate key 'port'.*YAML would silently keep the last one"):
        load_pair_spec(write(tmp_path, text))


def test_the_duplicate_names_both_lines(tmp_path):
    with pytest.raises(SpecError, match=r"duplicate key 'port' at line 4 \(first at line 3\)"):
        load_pair_spec(write(tmp_path, "model: m\nprefill: {\n  port: 1,\n  port: 2}\n"))


def test_equal_keys_in_different_mappings_are_not_duplicates(tmp_path):
    path = write(tmp_path, "model: m\nport: 8100\nprefill: {port: 8101}\ndecode: {port: 8102}\n")
    try:
        load_pair_spec(path)
    except SpecError as exc:  # other rules may refuse this spec; a duplicate key must not be the reason
        assert "duplicate" not in str(exc), exc


@pytest.mark.parametrize(
    ("line", "want"),
    [
        (r'm{path="C:\\tmp"} 1', "C:\\tmp"),
        (r'm{path="say \"hi\""} 1', 'say "hi"'),
        (r'm{path="two\nlines"} 1', "two\nlines"),
        (r'm{path="a\\nb"} 1', "a\\nb"),  # an escaped backslash then n: not a newline
        (r'm{path="\\\\"} 1', "\\\\"),
        (r'm{path="keep \t as is"} 1', "keep \\t as is"),  # not one of the format's three escapes
    ],
)
def test_label_values_are_unescaped(line, want):
    [(name, labels, value)] = parse_metrics(line + "\n")
    assert (name, labels, value) == ("m", {"path": want}, 1.0)


def test_metric_sum_matches_an_escaped_label_by_its_real_value():
    text = 'pdproxy_fallbacks_total{reason="bad \\"json\\""} 2\npdproxy_fallbacks_total{reason="x"} 5\n'
    assert metric_sum(text, "pdproxy_fallbacks_total", reason='bad "json"') == 2


@given(st.text(alphabet=st.sampled_from('ab"\\\n{}=,'), max_size=12))
def test_what_the_proxy_renders_parses_back_to_the_same_label(value):
    m = Metrics()
    m.inc("pdproxy_fallbacks_total", reason=value)
    assert metric_sum(m.render(), "pdproxy_fallbacks_total", reason=value) == 1
