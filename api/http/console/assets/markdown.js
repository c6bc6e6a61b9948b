// Markdown from a model, rendered into DOM nodes built one by one: paragraphs, headings,
// lists, fenced code, inline code, bold, italics and http(s) links. Everything else, HTML
// included, stays literal text: nothing in an answer is ever parsed as markup, run, or loaded.

import { h } from "./dom.js";

const INLINE = /(`[^`\n]+`)|(\*\*[^*\n]+\*\*)|(\*[^*\s\n][^*\n]*\*)|\[([^\]\n]+)\]\((https?:\/\/[^\s)]+)\)/g;

function inline(text) {
  const nodes = [];
  let at = 0;
  for (const match of text.matchAll(INLINE)) {
    if (match.index > at) nodes.push(text.slice(at, match.index));
    if (match[1]) nodes.push(h("code", { text: match[1].slice(1, -1) }));
    else if (match[2]) nodes.push(h("strong", { text: match[2].slice(2, -2) }));
    else if (match[3]) nodes.push(h("em", { text: match[3].slice(1, -1) }));
    else nodes.push(h("a", { href: match[5], rel: "noopener noreferrer nofollow", target: "_blank", text: match[4] }));
    at = match.index + match[0].length;
  }
  if (at < text.length) nodes.push(text.slice(at));
  return nodes;
}

export function renderMarkdown(source) {
  const fragment = document.createDocumentFragment();
  const lines = source.replace(/\r\n?/g, "\n").split("\n");
  let paragraph = [];
  let list = null;
  const flush = () => {
    if (paragraph.length) {
      const p = h("p");
      paragraph.forEach((line, i) => { if (i) p.append(h("br")); p.append(...inline(line)); });
      fragment.append(p);
      paragraph = [];
    }
    list = null;
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = line.match(/^\s*```\s*([\w+-]*)\s*$/);
    if (fence) {
      flush();
      const code = [];
      while (++i < lines.length && !/^\s*```\s*$/.test(lines[i])) code.push(lines[i]);
      fragment.append(h("pre", {}, h("code", { class: fence[1] ? `language-${fence[1]}` : null, text: code.join("\n") })));
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    const bullet = line.match(/^\s*[-*+]\s+(.*)$/);
    const numbered = line.match(/^\s*\d+[.)]\s+(.*)$/);
    if (heading) {
      flush();
      fragment.append(h(`h${Math.min(6, heading[1].length + 2)}`, {}, inline(heading[2])));
    } else if (bullet || numbered) {
      const tag = bullet ? "ul" : "ol";
      if (paragraph.length) flush();
      if (!list || list.tagName.toLowerCase() !== tag) {
        list = h(tag);
        fragment.append(list);
      }
      list.append(h("li", {}, inline((bullet || numbered)[1])));
    } else if (!line.trim()) {
      flush();
    } else {
      list = null;
      paragraph.push(line);
    }
  }
  flush();
  return fragment;
}
