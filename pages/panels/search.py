"""Find examples by text or index, see which components they load on, and open one."""
from __future__ import annotations

import streamlit as st

from analysis import components as cs
from pages.panels.browse import BrowseContext, open_in_browse
from pages.panels.examples import show_examples

MAX_IMAGES = 48  # search hits drawn in the image grid (all are in the table)


def search_panel(ctx: BrowseContext) -> None:
    """Search box, the hits with their largest coefficients, and a button opening one of those components."""
    query = st.text_input("Find examples by text (substring) or index (#12, 40)", key="cmp_search")
    found = cs.find_examples(query, ctx.texts, ctx.data.n_examples)
    if query and len(found) == 0:
        st.info("No example matches.")
        return
    if not len(found):
        return
    hits = ctx.examples(found)
    loads = cs.loadings(ctx.data.W, found, n=3)
    hits.insert(1, "loads on", [", ".join(f"{c} ({w:.3f})" for c, w in zip(comps, coefs))
                                for comps, coefs in zip(loads["components"], loads["coefficients"])])
    hits.insert(2, "share", loads["share"].to_numpy())
    st.caption(f"{len(found)} example(s); 'loads on' lists each example's 3 largest coefficients, 'share' "
               "their fraction of its total coefficient mass.")
    show_examples(hits, key="cmp_search_hits", images=ctx.images, table=True, max_images=MAX_IMAGES,
                  extras={"loads on": "{}", "share": "{:.0%}"},
                  column_config={"share": st.column_config.ProgressColumn("share", min_value=0.0, max_value=1.0,
                                                                          format="%.2f")})
    choices = sorted({c for comps in loads["components"] for c in comps})
    o1, o2 = st.columns([3, 1])
    target = o1.selectbox("Open component", choices, key="cmp_search_open")
    o2.button("Open in Browse", key="cmp_search_go", on_click=open_in_browse, args=(target,),
              help="switches to the Browse tab with this component selected")
