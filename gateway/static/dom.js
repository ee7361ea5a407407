// Small DOM helpers shared by the modules.

export const $ = (id) => document.getElementById(id);

/** el("a", {class: "x", href: "#", onclick: fn}, "text", child) */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

let toastTimer = 0;

/** A short message in the polite live region at the bottom of the page. */
export function toast(message, { error = false } = {}) {
  const box = $("toast");
  box.textContent = message;
  box.classList.toggle("error", error);
  box.hidden = !message;
  clearTimeout(toastTimer);
  if (message) toastTimer = setTimeout(() => { box.hidden = true; }, error ? 8000 : 4000);
}
