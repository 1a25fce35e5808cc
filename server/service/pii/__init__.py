"""Personal data found in free text and replaced before it is stored (issue 13, part 2).

`entities` names what is found, `recognizers` declares how each structured identifier is
recognized, `names` finds people's names, `detector` runs them over a text, and `redaction`
applies each field class's mode (placeholder, keyed hash or keep) to a record's texts.
"""
