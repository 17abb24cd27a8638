"""How constrained JSON is laid out, on both sides of the gRPC contract: as json.dumps
does, whitespace nowhere else. With llguidance's default (any whitespace between tokens)
a model can pad forever and never close the object. The shard applies it to JSON Schema
grammars; the router writes it into the %json rules of the Lark grammars it makes. A
schema may still ask otherwise, through its own "x-guidance" options."""

JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
