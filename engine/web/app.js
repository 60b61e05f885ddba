// The dashboard's shell: who is logged in, which page the hash names, polling lifetimes.

import * as account from "./account.js";
import { api, ApiError, onUnauthorized, setCsrfToken } from "./api.js";
import * as channels from "./channels.js";
import * as devices from "./devices.js";
import { notice } from "./dom.js";
import * as login from "./login.js";
import * as messages from "./messages.js";
import { can, session, setSession } from "./session.js";

const PAGES = { channels, messages, devices, account };
const view = document.getElementById("view");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const logout = document.getElementById("logout");
let unmount = () => {};
let loggedIn = false;

/** Which page and parameters the location hash names: `#/messages/42?x=y`. */
function route() {
  const hash = window.location.hash.replace(/^#\/?/, "");
  const [path, search = ""] = hash.split("?");
  const [page = "channels", ...rest] = path.split("/").filter(Boolean);
  return { page, rest, params: new URLSearchParams(search) };
}

function show() {
  unmount();
  if (!loggedIn) {
    nav.hidden = true;
    who.textContent = "";
    logout.hidden = true;
    unmount = login.mount(view, { onLoggedIn: started });
    return;
  }
  const { page, rest, params } = route();
  const module = PAGES[page] || channels;
  for (const link of nav.querySelectorAll("a")) {
    link.hidden = (Boolean(link.dataset.role) && !can(link.dataset.role))
      || (link.dataset.page === "account" && session.local);
    link.classList.toggle("current", link.dataset.page === (PAGES[page] ? page : "channels"));
  }
  nav.hidden = false;
  who.textContent = session.local ? "local access (no users configured)"
    : `${session.user} · ${session.role}`;
  logout.hidden = session.local;
  unmount = module.mount(view, { rest, params }) || (() => {});
}

function started() {
  loggedIn = true;
  show();
}

async function whoAmI() {
  try {
    const me = await api("GET", "auth/me", undefined, { quiet401: true });
    setSession(me.user || me.name, me.role);
    if (me.csrf || me.csrf_token) setCsrfToken(me.csrf || me.csrf_token);
    loggedIn = true;
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      // An engine without access control answers every call as the local administrator.
      setSession("local", "admin", true);
      loggedIn = true;
    } else {
      loggedIn = false;
    }
  }
  show();
}

onUnauthorized(() => {
  if (!loggedIn) return;
  loggedIn = false;
  notice("Your session has ended: log in again.", "error");
  show();
});

logout.addEventListener("click", async () => {
  try {
    await api("POST", "auth/logout");
  } catch (error) {
    // Logged out either way: the page forgets the session.
  }
  setSession(null, null);
  setCsrfToken(null);
  loggedIn = false;
  show();
});

window.addEventListener("hashchange", () => { if (loggedIn) show(); });
whoAmI();
