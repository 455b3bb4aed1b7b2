"""Input topics driftline creates take the broker's clock as record timestamp (LogAppendTime), so
the decoder's future bound catches a producer whose whole clock is ahead; CreateTime on request."""

from __future__ import annotations

import pytest
from kafka.admin import ConfigResource, ConfigResourceType

from driftline.config import Settings
from driftline.kafka.admin import TIMESTAMP_TYPE, admin_client, ensure_topics, topic_specs


def _types(settings: Settings) -> dict[str, str | None]:
    return {spec.name: spec.configs.get(TIMESTAMP_TYPE) for spec in topic_specs(settings)}


def test_predictions_and_labels_get_the_configured_timestamp_type_and_nothing_else_does() -> None:
    settings = Settings()
    types = _types(settings)
    t = settings.topics
    assert types[t.predictions] == types[t.labels] == "LogAppendTime"
    assert {name for name, value in types.items() if value} == {t.predictions, t.labels}
    create_time = Settings(windows={"input_timestamp_type": "CreateTime"})
    assert _types(create_time)[t.predictions] == "CreateTime"


@pytest.mark.integration
def test_ensure_topics_sets_it_on_the_broker(settings: Settings) -> None:
    ensure_topics(settings)
    with admin_client(settings) as admin:
        resource = ConfigResource(ConfigResourceType.TOPIC, settings.topics.labels)
        described = admin.describe_configs([resource], config_filter="All")
    (configs,) = (topics[settings.topics.labels] for topics in described.values())
    entry = configs[TIMESTAMP_TYPE]
    assert (entry.get("value") if isinstance(entry, dict) else entry) == "LogAppendTime"
