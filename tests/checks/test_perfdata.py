"""Nagios plugin output parsing: status text, long text, perfdata, base units.

Pure parsing, so plain strings are the peer here; the samples marked "real" were
printed by Debian's monitoring-plugins 2.3.3 on this machine, and
tests/checks/test_plugin.py runs those plugins for real.
"""

from __future__ import annotations

import pytest

from checks.perfdata import (
    PerfDatum,
    metric_name,
    metric_names,
    parse_output,
    parse_perfdata,
)

# -- single items -----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("time=0.000123s;;;0.000000;10.000000",
                 PerfDatum("time", 0.000123, "s", "", "", 0.0, 10.0), id="check_tcp-time"),
    pytest.param("/=24481103872B;216442024755;243497277849;0;270552530944",
                 PerfDatum("/", 24481103872.0, "B", "216442024755", "243497277849", 0.0,
                           270552530944.0), id="check_disk-bytes"),
    pytest.param("load1=0.170;5.000;10.000;0;",
                 PerfDatum("load1", 0.17, "", "5.000", "10.000", 0.0, None), id="check_load"),
    pytest.param("procs=90;500;1000;0;",
                 PerfDatum("procs", 90.0, "", "500", "1000", 0.0, None), id="check_procs"),
    pytest.param("pl=0%;20;60;0;100", PerfDatum("pl", 0.0, "%", "20", "60", 0.0, 100.0),
                 id="percent"),
    pytest.param("users=3", PerfDatum("users", 3.0), id="value-only"),
    pytest.param("rx=12345c", PerfDatum("rx", 12345.0, "c"), id="counter"),
    pytest.param("x=U;1;2", PerfDatum("x", None, "", "1", "2"), id="undetermined-value"),
    pytest.param("temp=-3.5;@-10:0;~:-20", PerfDatum("temp", -3.5, "", "@-10:0", "~:-20"),
                 id="negative-value-and-range-thresholds"),
    pytest.param("tiny=1.5e-05s", PerfDatum("tiny", 1.5e-05, "s"), id="exponent"),
    pytest.param("used=10MB;;;0MB;100MB", PerfDatum("used", 10.0, "MB", "", "", 0.0, 100.0),
                 id="uom-repeated-on-min-max"),
])
def test_a_perfdata_item_is_read_field_by_field(text: str, expected: PerfDatum) -> None:
    assert parse_perfdata(text) == ([expected], [])


@pytest.mark.parametrize(("text", "label"), [
    pytest.param("'a label with spaces'=1", "a label with spaces", id="spaces"),
    pytest.param("'it''s'=1", "it's", id="doubled-quote"),
    pytest.param("'a=b'=1", "a=b", id="equals-sign"),
    pytest.param("'C:\\ used %'=42%", "C:\\ used %", id="windows-drive"),
])
def test_quoted_labels_may_hold_spaces_quotes_and_equals(text: str, label: str) -> None:
    items, unreadable = parse_perfdata(text)
    assert ([i.label for i in items], unreadable) == ([label], [])


@pytest.mark.parametrize("text", [
    pytest.param("novalue", id="no-equals"),
    pytest.param("a=", id="empty-value"),
    pytest.param("a=1,5", id="decimal-comma"),
    pytest.param("a=abc", id="word"),
    pytest.param("a=1;2;3;4;5;6", id="too-many-fields"),
    pytest.param("'unclosed=1", id="unclosed-quote"),
    pytest.param("=1", id="empty-label"),
    pytest.param("a=nan", id="not-a-number"),
])
def test_an_unreadable_item_is_set_aside_not_guessed(text: str) -> None:
    items, unreadable = parse_perfdata(text)
    assert items == []
    assert unreadable


def test_one_bad_item_does_not_spoil_its_neighbours() -> None:
    items, unreadable = parse_perfdata("a=1 b=1,5 c=3s")
    assert [(i.label, i.value) for i in items] == [("a", 1.0), ("c", 3.0)]
    assert unreadable == ["b=1,5"]


# -- whole outputs --------------------------------------------------------------------------


def test_the_first_line_is_the_status_text_and_perfdata_follows_the_bar() -> None:
    out = parse_output("PROCS OK: 90 processes | procs=90;500;1000;0;\n")  # real
    assert out.text == "PROCS OK: 90 processes"
    assert out.long_text == ()
    assert out.metrics() == {"procs": 90.0}


def test_output_without_perfdata_has_no_metrics() -> None:
    out = parse_output("connect to address 127.0.0.1 and port 1: Connection refused\n")  # real
    assert (out.text, out.perfdata, out.unreadable) == (
        "connect to address 127.0.0.1 and port 1: Connection refused", (), ())


def test_long_output_and_later_perfdata_lines_follow_the_plugin_api() -> None:
    # The multi-line example of the Nagios plugin guidelines ("Plugin Output").
    out = parse_output(
        "DISK OK - free space: / 3326 MB (56%); | /=2643MB;5948;5958;0;5968\n"
        "/ 15272 MB (77%);\n"
        "/boot 68 MB (69%);\n"
        "/home 69357 MB (27%);\n"
        "/var/log 819 MB (84%); | /boot=68MB;88;93;0;98\n"
        "/home=69357MB;253404;253409;0;253414\n"
        "/var/log=818MB;970;975;0;980\n")
    assert out.text == "DISK OK - free space: / 3326 MB (56%);"
    assert out.long_text == ("/ 15272 MB (77%);", "/boot 68 MB (69%);", "/home 69357 MB (27%);",
                             "/var/log 819 MB (84%);")
    assert [d.label for d in out.perfdata] == ["/", "/boot", "/home", "/var/log"]
    assert out.metrics() == {"root_bytes": 2643 * 1024**2, "boot_bytes": 68 * 1024**2,
                             "home_bytes": 69357 * 1024**2, "var_log_bytes": 818 * 1024**2}


def test_a_bar_alone_on_a_later_line_starts_the_perfdata() -> None:
    out = parse_output("OK\nmore text\n| a=1\nb=2\n")
    assert out.long_text == ("more text",)
    assert out.metrics() == {"a": 1.0, "b": 2.0}


def test_crlf_and_empty_output_are_understood() -> None:
    assert parse_output("OK - fine|a=1\r\n").metrics() == {"a": 1.0}
    empty = parse_output("")
    assert (empty.text, empty.long_text, empty.perfdata) == ("", (), ())


def test_real_check_http_and_check_load_outputs() -> None:
    http = parse_output("HTTP OK: HTTP/1.0 200 OK - 124 bytes in 0.001 second response time "
                        "|time=0.001182s;;;0.000000;10.000000 size=124B;;;0;\n")
    assert http.metrics() == {"time_seconds": 0.001182, "size_bytes": 124.0}
    load = parse_output("LOAD OK - total load average: 0.17, 0.25, 0.25|load1=0.170;5.000;"
                        "10.000;0; load5=0.250;4.000;8.000;0; load15=0.250;3.000;6.000;0; \n")
    assert load.metrics() == {"load1": 0.17, "load5": 0.25, "load15": 0.25}


# -- units and names ------------------------------------------------------------------------


@pytest.mark.parametrize(("item", "name", "value"), [
    pytest.param("rta=12.5ms", "rta_seconds", 0.0125, id="ms-to-seconds"),
    pytest.param("lag=250us", "lag_seconds", 0.00025, id="us-to-seconds"),
    pytest.param("time=2s", "time_seconds", 2.0, id="seconds"),
    pytest.param("mem=2KB", "mem_bytes", 2048.0, id="KB-is-1024"),
    pytest.param("mem=2kB", "mem_bytes", 2048.0, id="kB-as-check_swap-writes-it"),
    pytest.param("mem=3MB", "mem_bytes", 3 * 1024.0**2, id="MB"),
    pytest.param("mem=1.5GB", "mem_bytes", 1.5 * 1024.0**3, id="GB"),
    pytest.param("mem=1TB", "mem_bytes", 1024.0**4, id="TB"),
    pytest.param("pl=5%", "pl_percent", 5.0, id="percent-stays-percent"),
    pytest.param("rx=99c", "rx_total", 99.0, id="counter-kept-as-total"),
    pytest.param("time_seconds=1s", "time_seconds", 1.0, id="no-doubled-suffix"),
    pytest.param("'Used Space'=7GB", "used_space_bytes", 7 * 1024.0**3, id="sanitised-label"),
    pytest.param("signal=-60dBm", "signal_dbm", -60.0, id="unknown-uom-kept-as-is"),
    pytest.param("/=1B", "root_bytes", 1.0, id="root-filesystem"),
])
def test_values_are_turned_into_base_units_with_the_unit_in_the_name(
        item: str, name: str, value: float) -> None:
    assert parse_output(f"OK | {item}").metrics() == {name: pytest.approx(value)}


def test_undetermined_values_are_left_out_of_the_metrics() -> None:
    assert parse_output("OK | a=U b=2").metrics() == {"b": 2.0}


def test_labels_that_sanitise_alike_get_distinct_names() -> None:
    items, _ = parse_perfdata("'a b'=1 a_b=2 'A B'=3")
    assert metric_names(items) == ["a_b", "a_b_2", "a_b_3"]


def test_a_label_of_only_punctuation_still_has_a_name() -> None:
    assert metric_name("%%", "") == "value"
