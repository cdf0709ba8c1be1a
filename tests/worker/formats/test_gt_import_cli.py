"""``camlabel gt import`` through the real CLI group and application factory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from click.testing import CliRunner
from sqlalchemy import func, select

from web.cli import main
from worker.store.models import Box, BoxSource

if TYPE_CHECKING:
    from tests.worker.formats.scene import Factory


def _env(runtime) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"DATABASE_URL": runtime.settings.database_url, "CAMLABEL_DATA_DIR": str(runtime.settings.data_dir), "REDIS_URL": ""}


def test_gt_import_prints_counts_and_errors(sqlite_runtime, sqlite_factory: Factory, tmp_path: Path) -> None:
    sqlite_factory.collection("cli", ["thing"], [("p/images/a.jpg", 100, 80)])
    folder = tmp_path / "p" / "annotations"
    folder.mkdir(parents=True)
    (folder / "a.xml").write_text("<annotation><filename>a.jpg</filename><size><width>100</width><height>80</height></size>"
                                  "<object><name>thing</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object></annotation>")
    (folder / "zz.xml").write_text("<annotation><filename>zz.jpg</filename></annotation>")
    runner = CliRunner()
    result = runner.invoke(main, ["gt", "import", "cli", str(tmp_path), "--format", "voc"], env=_env(sqlite_runtime))
    assert result.exit_code == 0, result.output
    assert "2 file(s) read: 1 image(s) matched, 1 box(es) imported" in result.output
    assert "error: p/annotations/zz.xml: no image in the collection matches 'p/images/zz.jpg'" in result.output
    with sqlite_runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Box).where(Box.source == BoxSource.ground_truth)) == 1

    nothing = runner.invoke(main, ["gt", "import", "cli", str(folder / "zz.xml"), "--format", "voc"], env=_env(sqlite_runtime))
    assert nothing.exit_code == 1 and "nothing was imported" in nothing.output

    missing = runner.invoke(main, ["gt", "import", "nope", str(tmp_path), "--format", "voc"], env=_env(sqlite_runtime))
    assert missing.exit_code == 1 and "no collection named 'nope'" in missing.output
