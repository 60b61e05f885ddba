// The caller's own account: change the password (the current one is asked again).

import { api } from "./api.js";
import { h, notice } from "./dom.js";
import { session } from "./session.js";

export function mount(view) {
  if (session.local) {
    view.replaceChildren(h("p", { class: "muted" },
      "Local access: no users are configured, so there is no password to change."));
    return () => {};
  }
  const error = h("p", { class: "error", id: "password-error", role: "alert" });
  const field = (id, label, autocomplete) => {
    const input = h("input", { id, type: "password", autocomplete, required: true });
    return [input, h("label", {}, label, input)];
  };
  const [current, currentLabel] = field("password-current", "Current password",
    "current-password");
  const [fresh, freshLabel] = field("password-new", "New password (at least 8 characters)",
    "new-password");
  const [again, againLabel] = field("password-again", "New password again", "new-password");
  const submit = h("button", { id: "password-submit", type: "submit" }, "Change password");
  const form = h("form", { class: "login", id: "password-form" },
    h("h1", {}, `Password of ${session.user}`),
    currentLabel, freshLabel, againLabel, submit, error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    if (fresh.value !== again.value) {
      error.textContent = "The new passwords differ.";
      return;
    }
    submit.disabled = true;
    try {
      const answer = await api("POST", "auth/password",
        { current: current.value, new: fresh.value });
      form.reset();
      const ended = answer.other_sessions_ended;
      notice(ended ? `Password changed; ${ended} other session(s) ended.`
        : "Password changed.");
    } catch (failure) {
      error.textContent = failure.status === 403 ? "The current password is wrong."
        : failure.status === 429 ? "Too many wrong attempts: try again later."
          : `Not changed: ${failure.message}`;
    } finally {
      submit.disabled = false;
    }
  });
  view.replaceChildren(form);
  current.focus();
  return () => {};
}
