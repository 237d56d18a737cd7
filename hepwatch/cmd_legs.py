"""`hepwatch legs`: the C.12 second stage (cross-leg correlator) on its own.

`hepwatch consume` runs this stage in a thread by default; run it here instead when consume
runs with `--no-legs-stage` (e.g. to scale the two stages apart). The options mean what they
mean for consume: the legs topic and group derive from the HEP topic and consume's group.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("legs")
@click.option("--kafka", metavar="BOOTSTRAP", help="Kafka bootstrap servers.")
@click.option(
    "--topic", help="HEP topic of the first stage; the legs topic is TOPIC.legs by default."
)
@click.option("--group", help="The first stage's consumer group; this stage uses GROUP.legs.")
@click.option(
    "--sink",
    metavar="SINK",
    help="Where the cross-leg anomalies go: jsonl:DIR or clickhouse:http(s)://... (a chDB "
    "directory is consume's alone: run the stage inside consume then).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Partition checkpoints (default var/state).",
)
@click.option("--metrics", metavar="HOST:PORT", help="Serve /metrics, /healthz, /readyz here.")
@click.pass_context
def legs(
    ctx: click.Context,
    kafka: str | None,
    topic: str | None,
    group: str | None,
    sink: str | None,
    state_dir: Path | None,
    metrics: str | None,
) -> None:
    """Correlate the legs of B2BUA/SBC calls (PROTOCOL.md C.12) from the legs topic that
    `hepwatch consume` fills, and write the cross-leg anomalies to the sink.

    Partitions are checkpointed with their offsets like consume's, so a restart resumes
    the legs in flight and writes each anomaly once.
    """
    from consumers.legs.stage import run_legs_service
    from hepwatch.cli import _settings

    settings = _settings(
        ctx,
        {
            "kafka": {"bootstrap": kafka, "topic": topic},
            "consumer": {
                "group": group,
                "sink": sink,
                "state_dir": state_dir,
                "metrics_listen": metrics,
            },
        },
    )
    try:
        run_legs_service(settings)
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
