#!/usr/bin/env python3
"""Generates include/mc/tokenize/unicode_tables.hpp: the Unicode and HTML data tables the tokenizers need.

The output holds only data; the code that reads it is hand-written in include/mc/tokenize/unicode.hpp
(keep the property bits and table layouts of the template below in step with that code).

Usage:  python tools/gen_unicode_tables.py [output.hpp]

Every table is derived from the component whose behaviour the C++ tokenizers reproduce:

- character classes of open_clip's split pattern ([\\p{L}]+, [\\p{N}], \\s, all with IGNORECASE) are
  measured with the `regex` module itself, code point by code point (its Unicode version is newer than
  Python's unicodedata, so the two disagree on recently added letters);
- str.isspace / str.lower (with its Final_Sigma rule), general categories, canonical decompositions,
  combining classes and NFC composition come from Python's unicodedata / str methods;
- HTML entities and numeric-reference rules come from Python's `html` module (html.unescape), and the
  extra upper-case entity names and width map from ftfy's definitions (rebuilt here from their rules).

Re-run after upgrading Python or `regex`; the header records the versions used.
"""
import html
import html.entities
import sys
import unicodedata

import regex

MAX_CP = 0x110000
SURROGATES = range(0xD800, 0xE000)

# ---- per code point property bits (must match the constants in the C++ template below) ----
P_RE_LETTER = 1 << 0   # matches [\p{L}] under regex IGNORECASE
P_RE_NUMBER = 1 << 1   # matches [\p{N}] under regex IGNORECASE (and not a letter)
P_RE_SPACE = 1 << 2    # matches none of [\p{L}], [\p{N}], [^\s\p{L}\p{N}]  (i.e. regex \s)
P_PY_SPACE = 1 << 3    # str.isspace()
P_CAT_C = 1 << 4       # general category C* (Cc Cf Cs Co Cn)
P_CAT_ZS = 1 << 5      # general category Zs
P_CAT_P = 1 << 6       # general category P*
P_CAT_MN = 1 << 7      # general category Mn
P_CAT_ND = 1 << 8      # general category Nd (Python re's \d)
P_CASED = 1 << 9       # "cased" as str.lower's Final_Sigma rule sees it (and not case-ignorable)
P_CASE_IGN = 1 << 10   # "case-ignorable" as str.lower's Final_Sigma rule sees it
PROP_BITS = 11


def props_of(cp, re_l, re_n, re_o):
    c = chr(cp)
    p = 0
    if cp not in SURROGATES:
        if re_l.match(c):
            p |= P_RE_LETTER
        elif re_n.match(c):
            p |= P_RE_NUMBER
        elif not re_o.match(c):
            p |= P_RE_SPACE
    if c.isspace():
        p |= P_PY_SPACE
    cat = unicodedata.category(c)
    if cat[0] == "C":
        p |= P_CAT_C
    if cat == "Zs":
        p |= P_CAT_ZS
    if cat[0] == "P":
        p |= P_CAT_P
    if cat == "Mn":
        p |= P_CAT_MN
    if cat == "Nd":
        p |= P_CAT_ND
    if cp not in SURROGATES and cp != 0x3A3:
        # CPython's Final_Sigma test, observed from the outside:
        #   "x" + SIGMA lowers to final sigma iff x is cased and not case-ignorable;
        #   "A" + x + SIGMA lowers to final sigma iff x is case-ignorable or cased.
        cased_not_ign = (c + "\u03a3").lower()[-1] == "\u03c2"
        ign_or_cased = ("A" + c + "\u03a3").lower()[-1] == "\u03c2"
        if cased_not_ign:
            p |= P_CASED
        elif ign_or_cased:
            p |= P_CASE_IGN
    elif cp == 0x3A3:
        p |= P_CASED
    return p


def runs(values):
    """[(start, value)] for maximal runs of equal values."""
    out = []
    prev = None
    for cp, v in enumerate(values):
        if v != prev:
            out.append((cp, v))
            prev = v
    return out


def lower_runs():
    singles = []
    special = []
    for cp in range(MAX_CP):
        if cp in SURROGATES or cp == 0x3A3:
            continue
        lo = chr(cp).lower()
        if lo == chr(cp):
            continue
        if len(lo) != 1:
            special.append((cp, [ord(x) for x in lo]))
            continue
        singles.append((cp, ord(lo) - cp))
    out = []  # (lo, hi, stride, delta)
    for cp, d in singles:
        if out:
            lo, hi, st, dd = out[-1]
            if dd == d and ((lo == hi and cp - hi in (1, 2)) or (lo != hi and cp - hi == st)):
                out[-1] = (lo, cp, cp - hi, d)
                continue
        out.append((cp, cp, 1, d))
    return out, special


def decompositions():
    """Canonical one-level decompositions: (cp, first, second or 0, composes back in NFC)."""
    out = []
    for cp in range(MAX_CP):
        if cp in SURROGATES:
            continue
        d = unicodedata.decomposition(chr(cp))
        if not d or d.startswith("<"):
            continue
        parts = [int(x, 16) for x in d.split()]
        assert 1 <= len(parts) <= 2, (hex(cp), d)
        composes = len(parts) == 2 and unicodedata.normalize("NFC", chr(cp)) == chr(cp)
        out.append((cp, parts[0], parts[1] if len(parts) == 2 else 0, composes))
    return out


def width_runs():
    """ftfy's fix_character_width map: U+3000 -> space, and U+FF01..U+FFEF -> NFKC when it differs."""
    pairs = [(0x3000, 0x20, 0)]
    for cp in range(0xFF01, 0xFFF0):
        alt = unicodedata.normalize("NFKC", chr(cp))
        if alt != chr(cp):
            assert len(alt) <= 2, hex(cp)
            pairs.append((cp, ord(alt[0]), ord(alt[1]) if len(alt) == 2 else 0))
    out = []  # (lo, hi, target of lo, second code point or 0)
    for cp, t, extra in pairs:
        if (out and not extra and not out[-1][3] and out[-1][1] + 1 == cp
                and out[-1][2] + (cp - out[-1][0]) == t):
            out[-1] = (out[-1][0], cp, out[-1][2], 0)
        else:
            out.append((cp, cp, t, extra))
    return out


def entity_string():
    """html5 entities as 'name=hex[,hex][!upper]' separated by spaces.

    '!' marks a lower-case name whose all-caps spelling ftfy also decodes (when html.unescape does not
    know that spelling); after '!' comes the upper-cased value when it differs from the value."""
    ents = html.entities.html5
    parts = []
    for name in sorted(ents):
        assert all(33 <= ord(ch) < 127 and ch not in " =!," for ch in name), name
        val = ents[name]
        item = name + "=" + ",".join("%x" % ord(ch) for ch in val)
        if name.endswith(";") and name == name.lower():
            up = "&" + name.upper()
            if html.unescape(up) == up:
                item += "!"
                uval = val.upper()
                if uval != val:
                    item += ",".join("%x" % ord(ch) for ch in uval)
        parts.append(item)
    return " ".join(parts)


def html_numeric_tables():
    inv = html._invalid_charrefs  # numeric references the HTML5 spec remaps
    assert all(k < 0x100 for k in inv)
    remap = [(k, ord(v)) for k, v in sorted(inv.items())]
    bad = sorted(html._invalid_codepoints)  # numeric references that decode to nothing
    rng = []
    for cp in bad:
        if rng and rng[-1][1] + 1 == cp:
            rng[-1][1] = cp
        else:
            rng.append([cp, cp])
    return remap, rng


def regex_ascii_folds():
    """Code points other than a-z that regex IGNORECASE matches against a lower-case ASCII letter."""
    out = []
    pats = {ch: regex.compile(ch, regex.IGNORECASE) for ch in "abcdefghijklmnopqrstuvwxyz"}
    for cp in range(MAX_CP):
        if cp in SURROGATES or cp < 0x80:
            continue
        for ch, p in pats.items():
            if p.fullmatch(chr(cp)):
                out.append((cp, ord(ch)))
    return out


def wrap(items, per_line):
    lines = []
    for i in range(0, len(items), per_line):
        lines.append("    " + ",".join(items[i:i + per_line]) + ",")
    return "\n".join(lines)


def wrap_string(s, width=110):
    out = []
    for i in range(0, len(s), width):
        out.append('    "' + s[i:i + width] + '"')
    return "\n".join(out)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "include/mc/tokenize/unicode_tables.hpp"
    re_l = regex.compile(r"[\p{L}]", regex.IGNORECASE)
    re_n = regex.compile(r"[\p{N}]", regex.IGNORECASE)
    re_o = regex.compile(r"[^\s\p{L}\p{N}]", regex.IGNORECASE)
    prop_runs = runs([props_of(cp, re_l, re_n, re_o) for cp in range(MAX_CP)])
    ccc_runs = runs([unicodedata.combining(chr(cp)) for cp in range(MAX_CP)])
    lruns, lspecial = lower_runs()
    assert lspecial == [(0x130, [0x69, 0x307])], lspecial  # unicode.hpp's to_lower hard-codes this one
    decomp = decompositions()
    wruns = width_runs()
    remap, invalid = html_numeric_tables()
    folds = regex_ascii_folds()

    prop_items = ["0x%x" % ((s << PROP_BITS) | v) for s, v in prop_runs]
    ccc_items = ["0x%x" % ((s << 8) | v) for s, v in ccc_runs]
    lower_items = ["{0x%x,0x%x,%d,%d}" % r for r in lruns]
    dec_items = ["0x%x" % ((int(c) << 63) | (cp << 42) | (a << 21) | b) for cp, a, b, c in decomp]
    width_items = ["{0x%x,0x%x,0x%x,0x%x}" % r for r in wruns]
    remap_items = ["{0x%x,0x%x}" % r for r in remap]
    invalid_items = ["{0x%x,0x%x}" % tuple(r) for r in invalid]
    fold_items = ["{0x%x,0x%x}" % r for r in folds]

    hdr = TEMPLATE
    subst = {
        "@PYVER@": sys.version.split()[0],
        "@UNIDATA@": unicodedata.unidata_version,
        "@REGEXVER@": regex.__version__,
        "@PROP_BITS@": str(PROP_BITS),
        "@PROP_RUNS@": wrap(prop_items, 10),
        "@CCC_RUNS@": wrap(ccc_items, 10),
        "@LOWER_RUNS@": wrap(lower_items, 6),
        "@DECOMP@": wrap(dec_items, 5),
        "@WIDTH@": wrap(width_items, 6),
        "@HTML_REMAP@": wrap(remap_items, 8),
        "@HTML_INVALID@": wrap(invalid_items, 8),
        "@FOLDS@": wrap(fold_items, 8),
        "@ENTITIES@": wrap_string(entity_string()),
    }
    for k, v in subst.items():
        hdr = hdr.replace(k, v)
    with open(path, "w", encoding="utf-8") as f:
        f.write(hdr)
    print(f"wrote {path}: {len(prop_runs)} property runs, {len(ccc_runs)} ccc runs, {len(lruns)} lower runs, "
          f"{len(decomp)} decompositions, {len(html.entities.html5)} entities, {len(folds)} folds")


TEMPLATE = r"""// mc/tokenize/unicode_tables.hpp — GENERATED by tools/gen_unicode_tables.py. Do not edit by hand:
// change the generator and re-run it.
//
// The Unicode and HTML data of the tokenizers, as compact sorted tables: per-code-point property bits,
// canonical combining classes, str.lower() runs, canonical decompositions, ftfy's width map,
// html.unescape's numeric-reference rules, regex IGNORECASE folds onto ASCII letters and the HTML5 named
// references. Only data: the code that reads it (UTF-8, property lookup, str.lower(), NFD / NFC) is
// hand-written in mc/tokenize/unicode.hpp.
//
// Sources: Python @PYVER@ (unicodedata @UNIDATA@: categories, str.isspace, str.lower, decompositions,
// combining classes), the `regex` module @REGEXVER@ (the letter / number / space classes of open_clip's
// split pattern, measured per code point with IGNORECASE), Python's html module (entities, numeric
// reference rules) and ftfy's width-map rule (NFKC of U+FF01..U+FFEF, U+3000 -> space).
#pragma once
#include <cstdint>

namespace mc::tokenize::uni {

// Property bits, one set per code point.
enum : uint32_t {
  kReLetter = 1u << 0,   // [\p{L}] under regex IGNORECASE
  kReNumber = 1u << 1,   // [\p{N}] under regex IGNORECASE (and not a letter)
  kReSpace = 1u << 2,    // none of [\p{L}], [\p{N}], [^\s\p{L}\p{N}] matches: regex \s
  kPySpace = 1u << 3,    // str.isspace()
  kCatC = 1u << 4,       // general category C* (Cc Cf Cs Co Cn)
  kCatZs = 1u << 5,      // general category Zs
  kCatP = 1u << 6,       // general category P*
  kCatMn = 1u << 7,      // general category Mn
  kCatNd = 1u << 8,      // general category Nd
  kCased = 1u << 9,      // cased (for the Final_Sigma rule of str.lower), not case-ignorable
  kCaseIgnorable = 1u << 10,
};
inline constexpr int kPropBits = @PROP_BITS@;

// Runs of equal properties: (first code point << kPropBits) | bits; a run ends where the next begins.
inline constexpr uint32_t kPropRuns[] = {
@PROP_RUNS@
};

// Runs of equal canonical combining class: (first code point << 8) | ccc.
inline constexpr uint32_t kCccRuns[] = {
@CCC_RUNS@
};

// str.lower() for single code points: code points lo, lo+stride, ..., hi map to cp + delta.
// (U+0130 lowers to two code points and U+03A3 depends on context; to_lower in unicode.hpp handles both.)
struct LowerRun {
  uint32_t lo, hi;
  int32_t stride, delta;
};
inline constexpr LowerRun kLowerRuns[] = {
@LOWER_RUNS@
};

// Canonical decompositions, one level, sorted: bit 63 = the pair composes back under NFC (a primary
// composite), bits 42..62 = code point, 21..41 = first, 0..20 = second (0 for singletons).
inline constexpr uint64_t kDecomp[] = {
@DECOMP@
};

// ftfy's fix_character_width: code points lo..hi map to target + (cp - lo), followed by `second`
// when that is not 0 (only U+FFE3 -> " \u0304").
struct WidthRun {
  uint32_t lo, hi, target, second;
};
inline constexpr WidthRun kWidthRuns[] = {
@WIDTH@
};

// html.unescape: numeric references remapped by the HTML5 spec (code point -> replacement) ...
inline constexpr uint32_t kHtmlNumericRemap[][2] = {
@HTML_REMAP@
};
// ... and ranges of numeric references that decode to nothing.
inline constexpr uint32_t kHtmlNumericDropped[][2] = {
@HTML_INVALID@
};

// Non-ASCII code points that regex IGNORECASE matches against the given lower-case ASCII letter.
inline constexpr uint32_t kRegexAsciiFolds[][2] = {
@FOLDS@
};

// The HTML5 named character references of Python's html.entities.html5, sorted, separated by spaces:
// "name=value code points in hex[!upper]". '!' marks names whose ALL-CAPS spelling ftfy's unescape_html
// also decodes; after '!' follows the upper-cased value when it differs from the value.
inline constexpr char kHtmlEntities[] =
@ENTITIES@;

}  // namespace mc::tokenize::uni
"""

if __name__ == "__main__":
    main()
