// One confirm dialog (#confirm-delete) for every destructive action: asks, resolves true when the
// action's button was chosen, and leaves the dialog's own wording as it found it.
import { $ } from "./dom.js";

export function confirmAction({ title, text, action }) {
  const dialog = $("confirm-delete");
  const heading = $("confirm-title");
  const button = dialog.querySelector("button[value=delete]");
  const before = [heading.textContent, button.textContent];
  heading.textContent = title;
  $("confirm-text").textContent = text;
  button.textContent = action;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      [heading.textContent, button.textContent] = before;
      resolve(dialog.returnValue === "delete");
    }, { once: true });
  });
}

export const plural = (count, one, many = `${one}s`) => `${count} ${count === 1 ? one : many}`;
