"""Data tables for the report: sortable, filterable, each downloadable as CSV, with no network.

A table is rendered once in HTML (each cell keeps its raw value in `data-v`, which sorting reads) and
once as CSV in a `data:` link, so the download works even with scripts off. The page's one inline
script (`SCRIPT`) sorts on a header click, filters rows as one types, and shows the two clusters
picked for comparison; it loads nothing.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from gpuclust.io.writers import CSV_LINE_END, spreadsheet_cell
from gpuclust.report.fmt import e


@dataclass(frozen=True)
class Column:
    name: str
    numeric: bool = False
    key: str | None = None  # a `data-c` on every cell of the column (the comparison shows two of them)


@dataclass(frozen=True)
class Cell:
    html: str  # what the page shows (escaped already)
    value: Any  # what sorting and the CSV use


def text(value: Any) -> Cell:
    return Cell(e(value), "" if value is None else value)


def csv_text(columns: list[Column], rows: list[list[Cell]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=CSV_LINE_END)
    writer.writerow([c.name for c in columns])
    for row in rows:
        writer.writerow([_csv_value(cell.value) for cell in row])
    return out.getvalue()


def _csv_value(value: Any) -> Any:
    """A cell of the download: missing and non-finite as empty, and text a spreadsheet would run as a formula
    (an item title `=HYPERLINK(...)` from the catalogue) shown as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return "" if value is None else spreadsheet_cell(value)


def data_table(table_id: str, columns: list[Column], rows: list[list[Cell]], filename: str | None = None) -> str:
    """The table with a filter box and a CSV download above it."""
    head = "".join(f"<th{_attrs(c)} title='sort'>{e(c.name)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(c, cell) for c, cell in zip(columns, row, strict=True)) + "</tr>"
                   for row in rows)
    link = "data:text/csv;charset=utf-8," + quote(csv_text(columns, rows), safe="")
    name = filename or f"{table_id}.csv"
    return (f"<div class='tools'><input type='search' class='filter' data-for='{e(table_id)}' "
            f"placeholder='filter rows' aria-label='filter rows'> <a class='csv' download='{e(name)}' "
            f"href='{e(link)}'>Download CSV</a> <span class='muted'>click a column heading to sort</span></div>"
            f"<div class='scroll'><table class='data' id='{e(table_id)}'><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>")


def _attrs(column: Column) -> str:
    cls = " class='num'" if column.numeric else ""
    return cls + (f" data-c='{e(column.key)}'" if column.key is not None else "")


def _cell(column: Column, cell: Cell) -> str:
    value = cell.value
    raw = "" if value is None or (isinstance(value, float) and not math.isfinite(value)) else value
    return f"<td{_attrs(column)} data-v='{e(raw)}'>{cell.html}</td>"


CSS = """
.tools{margin:6px 0;display:flex;gap:10px;align-items:center;flex-wrap:wrap}
.tools input{font:inherit;padding:3px 8px;border:1px solid #cfd5df;border-radius:6px;min-width:220px}
a.csv{font-size:13px}.scroll{overflow-x:auto}
table.data th{cursor:pointer;user-select:none;white-space:nowrap}
table.data th[aria-sort=ascending]::after{content:" ▲"}table.data th[aria-sort=descending]::after{content:" ▼"}
"""

SCRIPT = r"""
(function(){
"use strict";
function each(list,fn){Array.prototype.forEach.call(list,fn);}
function key(cell,numeric){
  var v=cell.getAttribute("data-v");
  if(numeric){var f=parseFloat(v);return isNaN(f)?-Infinity:f;}
  return (v===null?cell.textContent:v).toLowerCase();
}
each(document.querySelectorAll("table.data"),function(table){
  var heads=table.tHead.rows[0].cells;
  each(heads,function(th,i){
    th.tabIndex=0;
    function sort(){
      var numeric=th.classList.contains("num");
      var dir=th.getAttribute("aria-sort")==="descending"?1:-1;
      if(!th.getAttribute("aria-sort")&&!numeric){dir=1;}
      each(heads,function(h){h.removeAttribute("aria-sort");});
      th.setAttribute("aria-sort",dir>0?"ascending":"descending");
      var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
      rows.sort(function(a,b){var x=key(a.cells[i],numeric),y=key(b.cells[i],numeric);return x<y?-dir:x>y?dir:0;});
      each(rows,function(r){body.appendChild(r);});
    }
    th.addEventListener("click",sort);
    th.addEventListener("keydown",function(ev){if(ev.key==="Enter"){sort();}});
  });
});
each(document.querySelectorAll("input.filter"),function(input){
  var table=document.getElementById(input.getAttribute("data-for"));
  input.addEventListener("input",function(){
    var q=input.value.trim().toLowerCase();
    each(table.tBodies[0].rows,function(r){r.hidden=q!==""&&r.textContent.toLowerCase().indexOf(q)<0;});
  });
});
var pick=document.querySelectorAll("select.compare");
function compare(){
  var keep={all:true};
  each(pick,function(s){keep[s.value]=true;});
  each(document.querySelectorAll("#compare-table [data-c]"),function(c){c.hidden=!keep[c.getAttribute("data-c")];});
}
each(pick,function(s){s.addEventListener("change",compare);});
if(pick.length){compare();}
})();
"""
