"""The report page's own style sheet and its one script, inline in the page, and the
Content-Security-Policy that lets that script run and refuses anything fetched.
"""

from __future__ import annotations

import base64
import hashlib

STYLE = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, sans-serif; color: #222; margin: 0; background: #f6f7f9; }
header { background: #1f2d3d; color: #fff; padding: 18px 28px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header .sub { color: #c9d3de; }
nav { padding: 8px 28px; background: #fff; border-bottom: 1px solid #ddd; }
nav a { margin-right: 14px; color: #0b5cad; text-decoration: none; }
main { padding: 8px 28px 40px; }
section { background: #fff; border: 1px solid #e1e4e8; border-radius: 6px; margin: 18px 0;
  padding: 6px 18px 16px; }
h2 { font-size: 18px; margin: 12px 0 8px; }
h3 { font-size: 15px; margin: 14px 0 6px; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin-top: 16px; }
.card { background: #fff; border: 1px solid #e1e4e8; border-radius: 6px; padding: 10px 16px;
  min-width: 110px; }
.card b { display: block; font-size: 24px; }
.card.bad b { color: #c0392b; } .card.good b { color: #1e8449; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr));
  gap: 8px 20px; }
.trends { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr));
  gap: 4px 14px; }
figure { margin: 0; overflow-x: auto; }
figcaption { font-weight: 600; margin: 6px 0 2px; font-size: 13px;
  overflow-wrap: anywhere; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 12.5px; }
th, td { border-bottom: 1px solid #e6e6e6; padding: 3px 10px 3px 0; text-align: left;
  vertical-align: top; }
th { color: #555; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th { white-space: nowrap; }
td.msg { max-width: 640px; overflow-wrap: anywhere; }
code, .hash { font-family: ui-monospace, monospace; font-size: 12px; overflow-wrap: anywhere; }
.regression, .fail, .bad { color: #c0392b; } .improvement, .good { color: #1e8449; }
.noisy, .muted, .cleared { color: #777; }
.legend span { margin-right: 14px; white-space: nowrap; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px;
  border-radius: 50%; vertical-align: -1px; }
svg.plot, svg.noplot { max-width: 100%; height: auto; }
"""

# Runs once the page is parsed: every plot must have points and a real size on screen. It
# writes what it found, and the page's height, on the root element (for tests, and for a
# screenshot of the whole page).
CHECK_SCRIPT = """
(function () {
  var plots = document.querySelectorAll("svg.plot"), drawn = 0;
  plots.forEach(function (plot) {
    var box = plot.getBBox();
    if (plot.querySelectorAll(".pt").length > 0 && box.width > 0 && box.height > 0) {
      drawn += 1;
    }
  });
  document.documentElement.setAttribute("data-plots", String(plots.length));
  document.documentElement.setAttribute("data-plots-drawn", String(drawn));
  document.documentElement.setAttribute("data-height", String(document.body.scrollHeight));
})();
"""


def csp() -> str:
    """The page's policy: inline style, data: images and, of scripts, CHECK_SCRIPT alone."""
    digest = base64.b64encode(hashlib.sha256(CHECK_SCRIPT.encode()).digest()).decode()
    return (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:;"
        f" script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )
