"""wrk's report is parsed into the numbers the benchmarks print."""

import pytest

from bench.wrk import parse, start_wrk

REPORT = """Running 8s test @ http://127.0.0.1:3998/v1/fraud/score
  2 threads and 16 connections
  Latency Distribution
     50%   12.67ms
     75%   20.01ms
     90%   31.50ms
     99%  216.49ms
  7969 requests in 8.00s, 2.43MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:    996.20
Transfer/sec:    311.27KB
"""


def test_parse_reads_rate_percentiles_and_errors() -> None:
    result = parse(REPORT)
    assert result.requests_per_second == 996.2
    assert result.p50_ms == 12.67 and result.p99_ms == 216.49
    assert result.non_2xx == 5 and result.socket_errors == 3
    assert result.requests == 7969


def test_microseconds_and_seconds_become_milliseconds() -> None:
    report = REPORT.replace("12.67ms", "950.00us").replace("216.49ms", "1.20s")
    result = parse(report)
    assert result.p50_ms == pytest.approx(0.95) and result.p99_ms == pytest.approx(1200)


def test_only_loopback_targets_are_allowed() -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        start_wrk("http://10.0.0.1:3000/", b"{}", 1, 1).result()
