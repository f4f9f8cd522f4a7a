"""People from unlabeled photos: ``cluster`` (to people.json, or incrementally into a store), ``people`` (the
corrections: list, rename, merge, split, not) and ``evaluate-clustering``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from faceembed.cli._app import (
    DEFAULT_MODEL,
    Detector,
    FaceModelOption,
    NoFace,
    Progress,
    app,
    check_choices,
    print_json,
)

PANEL = "Photos: people from unlabeled photos"

Db = Annotated[str, typer.Option("--db", help="The store holding the people (sqlite:///people.db, a path ending "
                                              ".db, or postgresql://...).")]
CollectionOpt = Annotated[str, typer.Option("--collection", help="The store's people collection.")]

people_app = typer.Typer(no_args_is_help=True, help="Correct the people of a store: list, rename, merge, split, "
                                                    "not. Corrections are kept by later runs and --recluster.")
app.add_typer(people_app, name="people", rich_help_panel=PANEL)


def _check(detector: str, no_face: str, algorithm: str) -> None:
    from faceembed.faces.cluster_algos import ALGORITHMS

    check_choices(("detector", detector, ("mtcnn", "none")), ("no-face", no_face, ("skip", "whole")),
                  ("algorithm", algorithm, ALGORITHMS))


@app.command(rich_help_panel=PANEL)
def cluster(
    photos: Annotated[Path, typer.Argument(help="A folder of photos (searched recursively, any image format).")],
    out: Annotated[Path | None, typer.Option(help="people.json to write (with --db: the store's people).")] = None,
    model: FaceModelOption = DEFAULT_MODEL,
    detector: Detector = "mtcnn",
    no_face: NoFace = "skip",
    far: Annotated[float, typer.Option(help="False-accept rate whose card threshold joins faces (between two "
                                            "calibrated rates: log-interpolated).")] = 5e-4,
    algorithm: Annotated[str, typer.Option(help="average | complete | single linkage, chinese-whispers, dbscan, "
                                                "hdbscan (average: chosen on LFW View 1 training people).")]
    = "average",
    min_quality: Annotated[float | None, typer.Option(help="PFE models: faces of quality below Q stay "
                                                           "unassigned (reason 'low quality').")] = None,
    html: Annotated[Path | None, typer.Option(help="Folder for one contact sheet per person + index.html.")]
    = None,
    db: Annotated[str | None, typer.Option("--db", help="Add the photos' faces to the people of this store "
                                                        "incrementally (photos already in it are skipped).")] = None,
    collection: CollectionOpt = "people",
    recluster: Annotated[bool, typer.Option(help="With --db: re-cluster every face not in a confirmed person "
                                                 "(named, merged, split, 'not'), keeping the corrections.")]
    = False,
    progress: Progress = True,
) -> None:
    """Group every face of every photo under PHOTOS into people, with no labels, at the model card's threshold
    for a false-accept rate; people.json lists people largest first and the faces left unassigned."""
    from faceembed.errors import FaceembedError

    _check(detector, no_face, algorithm)
    if db is None:
        if out is None:
            raise FaceembedError("give --out people.json (or --db URL to keep the people in a store)")
        if recluster:
            raise FaceembedError("--recluster needs --db")
        from faceembed.faces.cluster import cluster_folder

        print_json(cluster_folder(photos, out, model, detector, no_face, far, algorithm, min_quality, html, progress))
        return
    from faceembed.faces.people_store import cluster_into_store

    if html is not None:
        raise FaceembedError("--html goes with --out (without --db); list a store with 'faceembed people list'")
    print_json(cluster_into_store(photos, db, collection, model, detector, no_face, far, algorithm, min_quality,
                                  recluster, out, progress))


@app.command("evaluate-clustering", rich_help_panel=PANEL)
def evaluate_clustering(
    people_json: Annotated[Path, typer.Argument(help="people.json written by 'faceembed cluster'.")],
    truth: Annotated[Path, typer.Option(help="One folder per person: a photo's folder names its own face "
                                             "(the one nearest the photo's centre).")],
    photos: Annotated[Path | None, typer.Option(help="The PHOTOS people.json's paths are relative to "
                                                     "(default: --truth).")] = None,
    peers: Annotated[bool, typer.Option(help="Peer rows (dlib Chinese Whispers, DBSCAN) on the same "
                                             "embeddings (people.faces.npz beside people.json).")] = True,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result here too.")] = None,
) -> None:
    """BCubed precision / recall / F, pairwise F and the number of people against folder names as truth."""
    from faceembed.faces.cluster_eval import evaluate_people

    print_json(evaluate_people(people_json, truth, photos, peers, json_out))


@people_app.command("list")
def people_list(db: Db, collection: CollectionOpt = "people") -> None:
    """The people, largest first, with their face ids."""
    from faceembed.faces.people_edit import list_people

    print_json(list_people(db, collection))


@people_app.command("rename")
def people_rename(old: str, new: str, db: Db, collection: CollectionOpt = "people") -> None:
    """Name a person (into an existing name: a merge)."""
    from faceembed.faces.people_edit import rename_person

    print_json(rename_person(db, old, new, collection))


@people_app.command("merge")
def people_merge(a: str, b: str, db: Db, collection: CollectionOpt = "people") -> None:
    """Move every face of B into A."""
    from faceembed.faces.people_edit import merge_people

    print_json(merge_people(db, a, b, collection))


@people_app.command("split")
def people_split(
    person: str,
    db: Db,
    faces: Annotated[str, typer.Option(help="Comma-separated face ids (faceembed people list) to move out.")],
    name: Annotated[str | None, typer.Option(help="The new person's name (default: the next p-number).")] = None,
    collection: CollectionOpt = "people",
) -> None:
    """Move some faces of PERSON to a new person."""
    from faceembed.faces.people_edit import split_person

    print_json(split_person(db, person, [f.strip() for f in faces.split(",") if f.strip()], name, collection))


@people_app.command("not")
def people_not(person: str, face: str, db: Db, collection: CollectionOpt = "people") -> None:
    """FACE is not PERSON: it leaves PERSON and never joins it again."""
    from faceembed.faces.people_edit import not_person

    print_json(not_person(db, person, face, collection))
