// The login page: user and password, posted to /api/v1/auth/login.

import { api, setCsrfToken } from "./api.js";
import { h } from "./dom.js";
import { setSession } from "./session.js";

export function mount(view, { onLoggedIn }) {
  const error = h("p", { class: "error", id: "login-error", role: "alert" });
  const user = h("input", { id: "login-user", name: "user", autocomplete: "username",
    required: true, autofocus: true });
  const password = h("input", { id: "login-password", name: "password", type: "password",
    autocomplete: "current-password", required: true });
  const submit = h("button", { id: "login-submit", type: "submit" }, "Log in");
  const form = h("form", { class: "login", id: "login-form" },
    h("h1", {}, "Log in to Interlink"),
    h("label", {}, "User", user),
    h("label", {}, "Password", password),
    submit, error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    submit.disabled = true;
    try {
      const answer = await api("POST", "auth/login",
        { user: user.value, password: password.value }, { quiet401: true });
      setCsrfToken(answer && (answer.csrf || answer.csrf_token));
      setSession(answer.user || user.value, answer.role);
      password.value = "";
      onLoggedIn();
    } catch (failure) {
      error.textContent = failure.status === 401 || failure.status === 403
        ? "Wrong user or password." : `Cannot log in: ${failure.message}`;
    } finally {
      submit.disabled = false;
    }
  });
  view.replaceChildren(form);
  user.focus();
  return () => {};
}
