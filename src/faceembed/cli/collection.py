"""``faceembed collection create|list|keys|new-key|revoke|delete``: collections of a store (SQLite or
PostgreSQL) and their API keys, for ``faceembed serve`` and ``fe.Collection``."""

from __future__ import annotations

from typing import Annotated

import typer

from faceembed.cli._app import app, print_json

PANEL = "Service"

collection_app = typer.Typer(no_args_is_help=True, help="Collections of a store and their API keys (for "
                                                        "'faceembed serve' and fe.Collection).")
app.add_typer(collection_app, name="collection", rich_help_panel=PANEL)

Db = Annotated[str, typer.Option(help="The store: sqlite:///path.db (or a path ending .db) | "
                                      "postgresql://user@host:port/dbname.")]
Name = Annotated[str, typer.Argument(help="Collection name: 1-100 characters of A-Z a-z 0-9 _ . -")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _info_dict(info) -> dict:
    return {"name": info.name, "model": info.model, "model_digest": info.model_digest, "dim": info.dim,
            "far": info.far, "threshold": info.threshold, "created": info.created, "meta": info.meta}


@collection_app.command("create")
def create(
    name: Name,
    db: Db,
    model: Annotated[str, typer.Option(help="Face model the collection is bound to (a name or a model file with "
                                            "a calibrated card).")] = "dlib-resnet",
    far: Annotated[float, typer.Option(help="False-accept rate whose card threshold decides 'same person'.")] = 1e-3,
) -> None:
    """Create a collection; its new API key is printed alone on the last line (shown once, stored hashed)."""
    from faceembed.faces.collection import Collection

    col, key = Collection.create(db, name, model, far)
    with col:
        info = col.info
        typer.echo(f"collection {info.name}: model {info.model} (digest {info.model_digest[:12]}), dim {info.dim}, "
                   f"threshold {info.threshold:.4f} at FAR {info.far:g}, in {col.store.url}")
    typer.echo("API key (shown once; send it as the x-api-key header):")
    typer.echo(key)


@collection_app.command("list")
def list_(db: Db, json_out: Json = False) -> None:
    """Every collection of the store, with its subject and face counts."""
    from faceembed.store import open_store

    with open_store(db) as store:
        rows = []
        for info in store.collections():
            subjects = store.subjects(info.name)
            rows.append({**_info_dict(info), "subjects": len(subjects), "faces": sum(s["faces"] for s in subjects)})
    if json_out:
        print_json(rows)
        return
    for r in rows:
        typer.echo(f"{r['name']}\t{r['model']}\tdim {r['dim']}\tFAR {r['far']:g}\t{r['subjects']} subjects\t"
                   f"{r['faces']} faces")


@collection_app.command("keys")
def keys(name: Name, db: Db, json_out: Json = False) -> None:
    """The collection's API keys: id, first 8 characters, created, revoked (never the key itself)."""
    from faceembed.store import open_store

    with open_store(db) as store:
        rows = store.keys(name)
    if json_out:
        print_json(rows)
        return
    import time

    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["created"]))
        typer.echo(f"{r['key_id']}\t{r['prefix']}...\t{when} UTC\t{'revoked' if r['revoked'] else 'active'}")


@collection_app.command("new-key")
def new_key(name: Name, db: Db) -> None:
    """Another API key for the collection, printed alone on the last line (shown once)."""
    from faceembed.store import open_store

    with open_store(db) as store:
        key = store.create_key(name)
    typer.echo(key)


@collection_app.command("revoke")
def revoke(name: Name, key_id: Annotated[str, typer.Argument(help="The key's id (see 'collection keys').")],
           db: Db) -> None:
    """Revoke an API key: it opens nothing from now on."""
    from faceembed.store import open_store

    with open_store(db) as store:
        store.revoke_key(name, key_id)
    typer.echo(f"revoked key {key_id} of collection {name}")


@collection_app.command("delete")
def delete(name: Name, db: Db) -> None:
    """Delete the collection with its subjects, faces and keys."""
    from faceembed.store import open_store

    with open_store(db) as store:
        store.delete_collection(name)
    typer.echo(f"deleted collection {name}")
