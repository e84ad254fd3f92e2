import json
import logging

import pytest

from service.logs import LOGGERS, configure_logging


@pytest.fixture(autouse=True)
def restore_loggers():
    saved = {
        name: (
            logging.getLogger(name).handlers[:],
            logging.getLogger(name).level,
            logging.getLogger(name).propagate,
        )
        for name in LOGGERS
    }
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


def test_json_lines_carry_level_logger_and_message(capsys: pytest.CaptureFixture) -> None:
    configure_logging("info", "json")
    logging.getLogger("service.example").info("model %s ready", "fraud-scorer")
    logging.getLogger("core.example").debug("not shown at info")
    try:
        raise ValueError("broken")
    except ValueError:
        logging.getLogger("dlserve").exception("load failed")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["message"] for line in lines] == ["model fraud-scorer ready", "load failed"]
    assert lines[0]["level"] == "INFO" and lines[0]["logger"] == "service.example"
    assert "ValueError: broken" in lines[1]["exception"]


def test_text_lines_for_people(capsys: pytest.CaptureFixture) -> None:
    configure_logging("warning", "text")
    logging.getLogger("service.example").info("hidden")
    logging.getLogger("service.example").warning("shown")
    assert capsys.readouterr().err.strip().endswith("WARNING service.example: shown")
