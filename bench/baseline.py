"""The seed-style loop: how the 2016 prototype would run as a service, one record at a time.

poll one record → fetch its image → decode → backbone + heads at batch 1 → insert the post,
its detections and its embedding → commit the transaction → commit the offset → next. Same
broker, database, images, preprocessing and model as the worker, so the ratio between the two
measures only the structure: batching, overlap of fetch/decode with inference, and amortised
commits. Written plainly on purpose; making it clever would make the yardstick lie.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import numpy as np

from bench.services import Services


def run(services: Services, bundle: Any, server: Any, records: int) -> dict[str, Any]:
    import requests
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata
    from sqlalchemy import create_engine
    from sqlalchemy.dialects.postgresql import insert

    from analytics.schema import Detection, Embedding, Model, Post
    from detector.preprocess import prepare
    from ingest.records import parse

    topic = services.create_topic()
    prefix = f"seed-{topic[-4:]}"
    bundle.batch_size = 1
    bundle.score(bundle.embed(np.zeros((1, bundle.input_size, bundle.input_size, 3), np.uint8)))
    services.produce(topic, prefix, [server.url(i) for i in range(records)])
    engine = create_engine(str(services.database_url))
    with engine.begin() as conn:
        conn.execute(insert(Model).values(
            model_version=bundle.version, backbone=bundle.backbone_id,
            brands=bundle.thresholds, metrics={}).on_conflict_do_nothing())
    consumer = KafkaConsumer(topic, bootstrap_servers=services.bootstrap,
                             group_id=f"{topic}-seed", enable_auto_commit=False,
                             auto_offset_reset="earliest", max_poll_records=1)
    done, started = 0, None
    stage = {"poll": 0.0, "fetch": 0.0, "decode": 0.0, "predict": 0.0, "database": 0.0,
             "offset_commit": 0.0}
    deadline = time.monotonic() + 600
    try:
        while done < records and time.monotonic() < deadline:
            t = time.perf_counter()
            polled = consumer.poll(timeout_ms=500, max_records=1)
            if started is not None:  # the first poll joins the group: not per-record work
                stage["poll"] += time.perf_counter() - t
            for tp, batch in polled.items():
                for message in batch:
                    started = started or time.time()
                    record = parse(message.value)
                    t = time.perf_counter()
                    data = requests.get(record.image_url, timeout=10).content
                    stage["fetch"] += time.perf_counter() - t
                    t = time.perf_counter()
                    pixels = prepare(data, bundle.input_size)[0].pixels[None]
                    stage["decode"] += time.perf_counter() - t
                    t = time.perf_counter()
                    embedding = bundle.embed(pixels)
                    scores = bundle.score(embedding)[0]
                    stage["predict"] += time.perf_counter() - t
                    t = time.perf_counter()
                    now = datetime.now(UTC)
                    with engine.begin() as conn:
                        conn.execute(insert(Post).values(
                            post_id=record.post_id, source=record.source, author=record.author,
                            caption=record.caption, hashtags=record.hashtags,
                            mentions=record.mentions, image_url=record.image_url,
                            posted_at=record.posted_at, image_status="ok",
                            extra=record.extra))
                        conn.execute(insert(Detection).values([
                            {"post_id": record.post_id, "brand": b, "model_version":
                             bundle.version, "score": float(s),
                             "present": bool(s >= bundle.thresholds[b]),
                             "posted_at": record.posted_at, "detected_at": now}
                            for b, s in zip(bundle.brands, scores, strict=True)]))
                        conn.execute(insert(Embedding).values(
                            post_id=record.post_id, backbone=bundle.backbone_id,
                            dim=int(embedding.shape[1]),
                            vector=embedding[0].astype(np.float16).tobytes(), created_at=now))
                    stage["database"] += time.perf_counter() - t
                    t = time.perf_counter()
                    consumer.commit({TopicPartition(tp.topic, tp.partition):
                                     OffsetAndMetadata(message.offset + 1, "", -1)})
                    stage["offset_commit"] += time.perf_counter() - t
                    done += 1
    finally:
        consumer.close()
        engine.dispose()
    commits, _ = services.timings(prefix)
    elapsed = float(commits.max() - started) if len(commits) and started else float("nan")
    return {"records": records, "stored": done, "seconds": round(elapsed, 2),
            "images_per_s": done / elapsed if elapsed > 0 else 0.0,
            "ms_per_record_by_stage": {k: round(1000 * v / max(done, 1), 2)
                                       for k, v in stage.items()}}
