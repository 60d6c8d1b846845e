// The scale-store dashboard (served at /ui/dashboard.js).
