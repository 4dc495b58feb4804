"""The gallery: an index of what was rendered, and the pages that browse it
(model → layer → unit, and jobs), served live by the API or exported as a
static site. Pages are HTML made from templates; nothing here speaks HTTP."""
