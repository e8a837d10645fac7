"""Folded stacks -> one self-contained interactive flamegraph SVG.

The SVG works as a file of its own and inline in an HTML page: no external assets, styles
scoped to its own id, one inline script. Click a frame to zoom into it (its ancestors stay
as full-width bars), click "Reset zoom" to go back, hover for name, samples and share,
"Search" highlights frames whose name matches a regular expression and says what share of
all samples they cover. Without scripts it still shows the whole graph with tooltips.

Layout: the root (all samples) at the bottom, callees above their callers, siblings sorted
by name so the same input always gives byte-identical output. Frames narrower than
`min_fraction` of all samples are left out (with their callees) and counted in the footer.
"""

from __future__ import annotations

import html
import zlib
from dataclasses import dataclass, field
from typing import Iterable

FONT_PX = 11
CHAR_PX = 6.6  # width of one monospace character at FONT_PX
PAD = 10
HEADER = 66
FOOTER = 26


@dataclass
class _Node:
    name: str
    samples: int = 0
    children: dict[str, "_Node"] = field(default_factory=dict)


def _tree(folded: dict[str, int]) -> _Node:
    root = _Node("all")
    for stack, n in folded.items():
        if n <= 0:
            continue
        root.samples += n
        node = root
        for name in (f for f in stack.split(";") if f):
            node = node.children.setdefault(name, _Node(name))
            node.samples += n
    return root


def _color(name: str, highlight: frozenset[str]) -> str:
    """Deterministic colour: compiler kernels teal, OS kernel orange, inlined aqua,
    unnamed grey, everything else a warm hue picked by a hash of the name."""
    h = zlib.crc32(name.encode())
    v1, v2 = (h & 0xFF) / 255, ((h >> 8) & 0xFF) / 255
    if name in highlight:
        return f"hsl({170 + 20 * v1:.0f},55%,{52 + 10 * v2:.0f}%)"
    if name.endswith("_[k]"):
        return f"hsl({24 + 12 * v1:.0f},85%,{58 + 8 * v2:.0f}%)"
    if name.endswith("_[i]"):
        return f"hsl({190 + 10 * v1:.0f},60%,{66 + 8 * v2:.0f}%)"
    if name == "[unknown]" or "+0x" in name or name == "all":
        return f"hsl(0,0%,{70 + 8 * v1:.0f}%)"
    return f"hsl({5 + 45 * v1:.0f},{75 + 15 * v2:.0f}%,{56 + 8 * v1:.0f}%)"


def _fit(name: str, width: float) -> str:
    room = int((width - 6) / CHAR_PX)
    if room < 4:
        return ""
    return name if len(name) <= room else name[: room - 2] + ".."


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


_SCRIPT = """(function(){
var svg=document.getElementById('@ID@'),W=@W@,PAD=@PAD@,CW=@CW@,TOTAL=@TOTAL@;
var fs=[].slice.call(svg.querySelectorAll('g.f')),st=svg.querySelector('.status'),
    rz=svg.querySelector('.reset'),found=svg.querySelector('.found'),idle=st.textContent;
function fit(n,w){var k=Math.floor((w-6)/CW);return k<4?'':(n.length<=k?n:n.slice(0,k-2)+'..');}
function num(g,a){return +g.getAttribute(a);}
function zoom(z){
  var zs=z?num(z,'data-s'):0,zn=z?num(z,'data-n'):TOTAL,zd=z?num(z,'data-d'):0;
  fs.forEach(function(g){
    var s=num(g,'data-s'),n=num(g,'data-n'),d=num(g,'data-d');
    var anc=d<zd&&s<=zs&&s+n>=zs+zn,inside=d>=zd&&s>=zs&&s+n<=zs+zn;
    if(!anc&&!inside){g.style.display='none';return;}
    g.style.display='';
    var x=anc?PAD:PAD+(s-zs)/zn*W,w=anc?W:n/zn*W,r=g.querySelector('rect'),t=g.querySelector('text');
    r.setAttribute('x',x.toFixed(2));r.setAttribute('width',(w>1.5?w-1:w).toFixed(2));
    t.setAttribute('x',(x+3).toFixed(2));t.textContent=fit(g.getAttribute('data-name'),w);
    if(z&&anc)g.classList.add('anc');else g.classList.remove('anc');
  });
  rz.style.opacity=z?'1':'0.35';
}
function search(){
  var q=window.prompt('Highlight frames matching (regular expression):','');
  fs.forEach(function(g){g.classList.remove('hit');});
  if(!q){found.textContent='';return;}
  var re;try{re=new RegExp(q);}catch(e){found.textContent='bad expression';return;}
  var spans=[];
  fs.forEach(function(g){if(re.test(g.getAttribute('data-name'))){g.classList.add('hit');
    spans.push([num(g,'data-s'),num(g,'data-s')+num(g,'data-n')]);}});
  spans.sort(function(a,b){return a[0]-b[0]||b[1]-a[1];});
  var hit=0,end=-1;spans.forEach(function(p){if(p[0]>=end){hit+=p[1]-p[0];end=p[1];}
    else if(p[1]>end){hit+=p[1]-end;end=p[1];}});
  found.textContent='matched '+(100*hit/TOTAL).toFixed(1)+'% of samples';
}
svg.addEventListener('click',function(e){
  var t=e.target;
  if(t.closest('.reset'))zoom(null);else if(t.closest('.search'))search();
  else{var g=t.closest('g.f');if(g)zoom(g);}
});
svg.addEventListener('mouseover',function(e){var g=e.target.closest('g.f');
  if(g)st.textContent=g.querySelector('title').textContent;});
svg.addEventListener('mouseout',function(e){if(e.target.closest('g.f'))st.textContent=idle;});
})();"""


def flamegraph_svg(folded: dict[str, int], title: str, subtitle: str = "", *, width: int = 1200,
                   frame_height: int = 16, highlight: Iterable[str] = (), min_fraction: float = 0.0005,
                   svg_id: str | None = None) -> str:
    """The flamegraph of folded stacks ("a;b;c" -> samples) as an SVG document string.
    highlight: frame names to colour apart (e.g. a compiler's kernel functions).
    svg_id: the root element's id (scopes the styles and script when several graphs share a
    page); by default derived from the input, so output is deterministic."""
    folded = {k: int(v) for k, v in sorted(folded.items())}
    root = _tree(folded)
    total = root.samples
    marks = frozenset(highlight)
    if svg_id is None:
        key = title + "\0" + "".join(f"{k} {v}\n" for k, v in folded.items())
        svg_id = f"fg{zlib.crc32(key.encode()):08x}"
    inner_w = width - 2 * PAD

    frames: list[tuple[int, int, _Node]] = []  # depth, start sample, node
    omitted = 0

    def walk(node: _Node, depth: int, start: int) -> None:
        nonlocal omitted
        frames.append((depth, start, node))
        offset = start
        for name in sorted(node.children):
            child = node.children[name]
            if child.samples < min_fraction * total:
                omitted += 1
            else:
                walk(child, depth + 1, offset)
            offset += child.samples

    if total:
        walk(root, 0, 0)
    depth_max = max((d for d, _, _ in frames), default=0)
    graph_h = (depth_max + 1) * frame_height
    height = HEADER + graph_h + FOOTER

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" id="{svg_id}" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">',
           f"<style>#{svg_id} text{{font-family:monospace;font-size:{FONT_PX}px;fill:#000}}"
           f"#{svg_id} g.f text{{pointer-events:none}}#{svg_id} g.f{{cursor:pointer}}"
           f"#{svg_id} g.f:hover rect{{stroke:#000;stroke-width:0.6}}#{svg_id} g.anc{{opacity:0.6}}"
           f"#{svg_id} g.hit rect{{fill:#e34fd7}}#{svg_id} .btn{{cursor:pointer}}"
           f"#{svg_id} .btn text{{fill:#1f4e8c;text-decoration:underline}}"
           f"#{svg_id} .title{{font-size:16px;font-weight:bold}}#{svg_id} .sub{{fill:#555}}</style>",
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fbfaf7"/>',
           f'<text class="title" x="{width / 2:.1f}" y="20" text-anchor="middle">{_esc(title)}</text>',
           f'<text class="sub" x="{width / 2:.1f}" y="38" text-anchor="middle">{_esc(subtitle)}</text>',
           f'<g class="btn reset" style="opacity:0.35"><text x="{PAD}" y="{HEADER - 10}">Reset zoom</text></g>',
           f'<g class="btn search"><text x="{width - PAD}" y="{HEADER - 10}" text-anchor="end">Search</text></g>',
           f'<text class="found sub" x="{width - PAD - 60}" y="{HEADER - 10}" text-anchor="end"></text>']
    if not total:
        out.append(f'<text x="{width / 2:.1f}" y="{HEADER + 12}" text-anchor="middle">no samples</text>')
    for depth, start, node in frames:
        x = PAD + start / total * inner_w
        w = node.samples / total * inner_w
        y = HEADER + graph_h - (depth + 1) * frame_height
        tip = f"{node.name}: {node.samples} samples ({100 * node.samples / total:.2f}%)"
        out.append(
            f'<g class="f" data-d="{depth}" data-s="{start}" data-n="{node.samples}" data-name="{_esc(node.name)}">'
            f"<title>{_esc(tip)}</title>"
            f'<rect x="{x:.2f}" y="{y}" width="{(w - 1 if w > 1.5 else w):.2f}" height="{frame_height - 1}" '
            f'rx="2" fill="{_color(node.name, marks)}"/>'
            f'<text x="{x + 3:.2f}" y="{y + frame_height - 4.5:.1f}">{_esc(_fit(node.name, w))}</text></g>')
    note = f"{total} samples; click a frame to zoom, Search to highlight"
    if omitted:
        note += f"; {omitted} frames under {min_fraction:.2%} of samples left out"
    out.append(f'<text class="status sub" x="{PAD}" y="{height - 9}">{_esc(note)}</text>')
    script = _SCRIPT
    for key, value in {"@ID@": svg_id, "@W@": inner_w, "@PAD@": PAD, "@CW@": CHAR_PX, "@TOTAL@": max(total, 1)}.items():
        script = script.replace(key, str(value))
    out.append(f'<script type="text/javascript"><![CDATA[\n{script}\n]]></script>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
