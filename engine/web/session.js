// Who is logged in and what their role lets the page show.

const RANKS = { viewer: 1, operator: 2, admin: 3 };

export const session = { user: null, role: null, local: false };

/** True when the session's role includes `role` (viewer < operator < admin). */
export function can(role) {
  return (RANKS[session.role] || 0) >= (RANKS[role] || 99);
}

export function setSession(user, role, local = false) {
  session.user = user;
  session.role = role ? String(role).toLowerCase() : null;
  session.local = local;
}
