// Starts Swagger UI on /docs from this server's own copy of its files (no CDN, no inline
// script: the page's Content-Security-Policy allows scripts from this server only).
"use strict";
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  validatorUrl: null,  // the default would send the spec to validator.swagger.io
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  layout: "BaseLayout",
});
