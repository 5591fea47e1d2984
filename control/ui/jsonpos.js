// Where each value of a JSON text is: lets the flag editor put an error the engine reports at a
// JSON path (`targeting.if[0]`, `variants["on"]`) on the exact text the user typed.

/** Parses `text`; returns `{value, spans}` where `spans` maps a path key (see `pathKey`) to the
 *  `[start, end)` offsets of that value, or throws `{message, offset}` on a syntax error. */
export function parseWithSpans(text) {
  const spans = new Map();
  let i = 0;
  const fail = (message) => {
    throw { message, offset: i };
  };
  const ws = () => {
    while (i < text.length && " \t\r\n".includes(text[i])) i += 1;
  };
  const str = () => {
    const start = i;
    i += 1;
    while (i < text.length && text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
    if (i >= text.length) fail("unterminated string");
    i += 1;
    return JSON.parse(text.slice(start, i));
  };
  const value = (path) => {
    ws();
    const start = i;
    let v;
    const c = text[i];
    if (c === "{") {
      i += 1;
      v = {};
      ws();
      if (text[i] === "}") i += 1;
      else {
        for (;;) {
          ws();
          if (text[i] !== '"') fail("expected a quoted key");
          const k = str();
          ws();
          if (text[i] !== ":") fail("expected ':'");
          i += 1;
          v[k] = value([...path, k]);
          ws();
          if (text[i] === ",") i += 1;
          else if (text[i] === "}") {
            i += 1;
            break;
          } else fail("expected ',' or '}'");
        }
      }
    } else if (c === "[") {
      i += 1;
      v = [];
      ws();
      if (text[i] === "]") i += 1;
      else {
        for (;;) {
          v.push(value([...path, v.length]));
          ws();
          if (text[i] === ",") i += 1;
          else if (text[i] === "]") {
            i += 1;
            break;
          } else fail("expected ',' or ']'");
        }
      }
    } else if (c === '"') {
      v = str();
    } else {
      const m = /^(-?\d+(\.\d+)?([eE][+-]?\d+)?|true|false|null)/.exec(text.slice(i));
      if (!m) fail(i >= text.length ? "unexpected end" : `unexpected '${c}'`);
      i += m[0].length;
      v = JSON.parse(m[0]);
    }
    spans.set(pathKey(path), [start, i]);
    return v;
  };
  const v = value([]);
  ws();
  if (i < text.length) fail("unexpected text after the value");
  return { value: v, spans };
}

/** The segments of an engine path: `a.b[0]["c.d"]` → ["a", "b", 0, "c.d"]. */
export function parsePath(path) {
  const segs = [];
  const re = /\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]|\.?([^.[\]]+)/g;
  let m;
  while ((m = re.exec(path)) !== null) {
    if (m[1] !== undefined) segs.push(Number(m[1]));
    else if (m[2] !== undefined) segs.push(JSON.parse(m[2]));
    else segs.push(m[3]);
  }
  return segs;
}

export function pathKey(segs) {
  return JSON.stringify(segs);
}

/** Line and column (1-based) of `offset` in `text`. */
export function lineCol(text, offset) {
  const before = text.slice(0, offset).split("\n");
  return { line: before.length, col: before[before.length - 1].length + 1 };
}
