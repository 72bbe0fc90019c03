#!/usr/bin/env python3
"""Build the docs site offline, without Quarto.

`nbdev_docs` is the real site build (Quarto renders nbdev's processed notebooks). Quarto cannot be
installed on machines without internet, so this script runs the same first half, nbdev's notebook
processing (`proc_nbs`: hidden cells removed, `#| export` functions documented with `show_doc`,
directives stripped, the title cell turned into front matter), and renders the processed notebooks
to static HTML with nbconvert, with the sidebar of `_quarto.yml`.

    python tools/build_docs.py [--out _site]    # the site
    python tools/build_docs.py --readme         # README.md from nbs/index.ipynb
    python tools/build_docs.py --sidebar        # regenerate _quarto.yml's sidebar from the notebooks in nbs/

The sidebar is generated, never edited by hand: every notebook of nbs/ is in it (index first, numbered chapters
below 10 under "Chapters", the rest under "Appendix"), and tests/test_docs.py fails when it is stale.
"""

import argparse, html, os, re, shutil
from pathlib import Path

import nbformat, yaml
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[1]

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} – {site}</title>
<style>
body {{ margin: 0; font-family: -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; display: flex; }}
nav {{ width: 250px; min-height: 100vh; background: #f4f6f8; padding: 1.2rem; box-sizing: border-box; flex-shrink: 0; }}
nav a {{ display: block; color: #2a5ea8; text-decoration: none; padding: .18rem 0; font-size: .93rem; }}
nav a.active {{ font-weight: 700; color: #111; }}
nav .section {{ margin-top: 1rem; font-size: .78rem; text-transform: uppercase; color: #666; letter-spacing: .05em; }}
main {{ max-width: 980px; padding: 1.5rem 2.5rem; box-sizing: border-box; overflow-x: auto; }}
pre {{ background: #f7f7f9; padding: .6rem .8rem; overflow-x: auto; font-size: .85rem; border-radius: 4px; }}
.jp-OutputArea-output pre {{ background: #fff; border-left: 3px solid #ddd; }}
img {{ max-width: 100%; }} table {{ border-collapse: collapse; font-size: .85rem; }}
td, th {{ border: 1px solid #ddd; padding: .2rem .45rem; }} .lead {{ color: #555; font-size: 1.1rem; }}
.jp-InputPrompt, .jp-OutputPrompt, .prompt {{ display: none; }} a.anchor-link {{ display: none; }}
</style></head>
<body><nav><div><a href="index.html"><b>{site}</b></a></div>{nav}</nav>
<main><h1 class="title">{title}</h1>{lead}
{body}
</main></body></html>
"""


def sidebar(quarto: dict) -> list:
    "(section, notebook) pairs in sidebar order."
    out = []
    for item in quarto["website"]["sidebar"]["contents"]:
        if isinstance(item, str):
            out.append(("", item))
        else:
            out += [(item["section"], nb) for nb in item["contents"]]
    return out


def page_name(nb: str) -> str:
    return Path(nb).stem + ".html"


def front_matter(nb) -> dict:
    "Pop nbdev's front-matter raw cell (title, description) from a processed notebook."
    for i, c in enumerate(nb.cells):
        if c.cell_type == "raw" and c.source.lstrip().startswith("---"):
            meta = yaml.safe_load(c.source.strip().strip("-")) or {}
            del nb.cells[i]
            return meta
    return {}


DIRECTIVE = re.compile(r"^\s*#\|\s*([\w-]+)\s*:?\s*(.*)$")


def quarto_cells(nb):
    "Apply the Quarto cell options nbdev leaves in processed notebooks (echo, include, output: asis)."
    cells = []
    for c in nb.cells:
        if c.cell_type != "code":
            cells.append(c)
            continue
        lines = c.source.splitlines()
        opts = {}
        while lines and DIRECTIVE.match(lines[0]):
            k, v = DIRECTIVE.match(lines.pop(0)).groups()
            opts[k] = v.strip().lower()
        if opts.get("include") == "false":
            continue
        c.source = "\n".join(lines)
        if opts.get("echo") == "false" or not c.source.strip():
            c.metadata.setdefault("tags", []).append("remove_input")
        for o in c.get("outputs", []):
            data = o.get("data", {})
            if "text/markdown" in data:  # show_doc output: drop pandoc attributes that plain markdown shows as text
                data["text/markdown"] = re.sub(r"\{(target|\.)[^}]*\}", "", data["text/markdown"])
                data.pop("text/plain", None)
        cells.append(c)
    nb.cells = cells
    return nb


def _only_clean_imports():
    """Make nbdev's docs processing run export cells, show_doc cells and import-only cells, never a test cell
    that happens to import something (nbdev would run it out of context: its data does not exist there)."""
    import ast, nbdev.processors as P

    if getattr(P._do_eval, "_surgseg", False):
        return
    orig = P._do_eval

    def _do_eval(cell):
        res = orig(cell)
        if res and not (cell.directives_.keys() & {"export", "exports", "exporti", "exec_doc"}):
            trees = cell.parsed_() or []
            if (
                P._ast_contains(trees, (ast.Import, ast.ImportFrom))
                and not P._show_docs(trees)
                and any(not isinstance(t, (ast.Import, ast.ImportFrom)) for t in trees)
            ):
                return None
        return res

    _do_eval._surgseg = True
    P._do_eval = _do_eval


def build(out: Path, nbs: Path = ROOT / "nbs") -> list[Path]:
    "Process the notebooks with nbdev and write one HTML page per sidebar entry into `out`."
    from nbdev.serve import proc_nbs

    _only_clean_imports()
    os.chdir(ROOT)
    cache = proc_nbs(str(nbs), n_workers=0, force=True)
    quarto = yaml.safe_load((ROOT / "_quarto.yml").read_text())
    entries = sidebar(quarto)
    site = quarto["website"]["title"]
    from traitlets.config import Config
    from nbconvert.filters import markdown2html

    c = Config()
    c.TagRemovePreprocessor.remove_input_tags = {"remove_input"}
    c.TagRemovePreprocessor.enabled = True
    exporter = HTMLExporter(template_name="basic", config=c, exclude_input_prompt=True, exclude_output_prompt=True)
    pages, titles = {}, {}
    for _, nbname in entries:
        src = cache / nbname
        if not src.exists():
            continue
        nb = nbformat.read(src, as_version=4)
        meta = front_matter(nb)
        quarto_cells(nb)
        titles[nbname] = meta.get("title", Path(nbname).stem)
        body, _ = exporter.from_notebook_node(nb)
        pages[nbname] = (meta, body)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    written = []
    for _, nbname in entries:
        if nbname not in pages:
            continue
        meta, body = pages[nbname]
        nav, last = [], None
        for section, other in entries:
            if other not in titles or other == "index.ipynb":
                continue
            if section and section != last:
                nav.append(f'<div class="section">{html.escape(section)}</div>')
            last = section
            cls = ' class="active"' if other == nbname else ""
            nav.append(f'<a{cls} href="{page_name(other)}">{html.escape(titles[other])}</a>')
        lead = f'<div class="lead">{markdown2html(meta["description"])}</div>' if meta.get("description") else ""
        p = tmp / page_name(nbname)
        p.write_text(
            PAGE.format(
                title=html.escape(titles[nbname]), site=html.escape(site), nav="\n".join(nav), lead=lead, body=body
            ),
            encoding="utf-8",
        )
        written.append(out / p.name)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return written


def sidebar_entries(nbs: Path = ROOT / "nbs") -> list:
    "(section, notebook) pairs the sidebar must hold: every notebook of `nbs`, in file-name order."
    names = sorted(p.name for p in nbs.glob("*.ipynb") if not p.name.startswith(("_", ".")))
    chapters = [n for n in names if n[:2].isdigit() and int(n[:2]) < 10]
    appendix = [n for n in names if n not in chapters and n != "index.ipynb"]
    return [("", "index.ipynb")] + [("Chapters", n) for n in chapters] + [("Appendix", n) for n in appendix]


def write_sidebar(quarto: Path = ROOT / "_quarto.yml", nbs: Path = ROOT / "nbs") -> Path:
    "Rewrite the `sidebar:` block of `quarto` from `sidebar_entries` (the rest of the file is kept as it is)."
    text = quarto.read_text()
    head, rest = text.split("  sidebar:\n", 1)
    tail = rest[rest.index("\n\n") if "\n\n" in rest else len(rest) :]
    lines = ["  sidebar:", "    style: floating", "    contents:", "      - index.ipynb"]
    for section in ("Chapters", "Appendix"):
        lines += [f'      - section: "{section}"', "        contents:"]
        lines += [f"          - {n}" for s_, n in sidebar_entries(nbs) if s_ == section]
    tmp = quarto.with_suffix(".yml.tmp")
    tmp.write_text(head + "\n".join(lines) + tail)
    tmp.replace(quarto)
    return quarto


def readme(index: Path = ROOT / "nbs" / "index.ipynb", out: Path = ROOT / "README.md") -> Path:
    """Write README.md (GitHub markdown) from index.ipynb, as `nbdev_readme` does with Quarto; figures go to
    index_files/."""
    from nbdev.serve import proc_nbs
    from nbconvert import MarkdownExporter
    from traitlets.config import Config

    os.chdir(ROOT)
    _only_clean_imports()
    cache = proc_nbs(str(index.parent), n_workers=0, force=True)
    nb = nbformat.read(cache / index.name, as_version=4)
    meta = front_matter(nb)
    quarto_cells(nb)
    c = Config()
    c.TagRemovePreprocessor.remove_input_tags = {"remove_input"}
    c.TagRemovePreprocessor.enabled = True
    body, res = MarkdownExporter(config=c).from_notebook_node(nb, resources={"output_files_dir": "index_files"})
    figs = ROOT / "index_files"
    shutil.rmtree(figs, ignore_errors=True)
    for name, data in res.get("outputs", {}).items():
        (ROOT / name).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / name).write_bytes(data)
    head = f"# {meta.get('title', 'surgseg')}\n\n" + (f"> {meta['description']}\n\n" if meta.get("description") else "")

    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(head + body.strip() + "\n", encoding="utf-8")
    tmp.replace(out)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "_site"), help="output folder of the site (replaced)")
    ap.add_argument("--readme", action="store_true", help="only write README.md from nbs/index.ipynb")
    ap.add_argument("--sidebar", action="store_true", help="only regenerate _quarto.yml's sidebar from nbs/")
    args = ap.parse_args()
    if args.readme:
        print(f"wrote {readme()}")
    elif args.sidebar:
        print(f"wrote {write_sidebar()}")
    else:
        pages = build(Path(args.out).resolve())
        print(f"wrote {len(pages)} pages to {pages[0].parent if pages else '-'}")
