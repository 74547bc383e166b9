"""Panels the pages lay out: each is a function of an explicit context (no module state), rendering widgets.

examples.py       the one example renderer (text cards or an image grid, with the table)
browse.py         the Components page's context (BrowseContext) and its cached loaders
overview.py, component.py, attributions.py, search.py, example_map.py, export.py: the Components page's panels
"""
