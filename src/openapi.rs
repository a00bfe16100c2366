//! The API description, generated from the route registry at start-up: every mounted route
//! appears, with its parameters, tag and access rule. Later modules enrich operations
//! (request and response schemas) through the same registry.

use crate::routes::{openapi_path, path_params, Access, Registry};
use actix_web::http::Method;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, Paths};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ComponentsBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Required, ResponseBuilder,
};

fn http_method(m: &Method) -> Option<HttpMethod> {
    Some(match *m {
        Method::GET => HttpMethod::Get,
        Method::POST => HttpMethod::Post,
        Method::PUT => HttpMethod::Put,
        Method::PATCH => HttpMethod::Patch,
        Method::DELETE => HttpMethod::Delete,
        Method::HEAD => HttpMethod::Head,
        Method::OPTIONS => HttpMethod::Options,
        Method::TRACE => HttpMethod::Trace,
        _ => return None,
    })
}

/// Builds the document for the registry.
pub fn document(registry: &Registry) -> OpenApi {
    let mut paths = Paths::new();
    for r in registry.routes() {
        let Some(method) = http_method(&r.method) else {
            continue;
        };
        let mut op = OperationBuilder::new()
            .summary(Some(r.summary))
            .tag(r.tag)
            .operation_id(Some(format!(
                "{}_{}",
                r.method.as_str().to_ascii_lowercase(),
                openapi_path(r.path)
                    .trim_matches('/')
                    .replace(['/', '{', '}', '.', '-'], "_")
            )))
            .response(
                "default",
                ResponseBuilder::new()
                    .description("Error in the surface's error format")
                    .build(),
            );
        for p in path_params(r.path) {
            op = op.parameter(
                ParameterBuilder::new()
                    .name(p)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .build(),
            );
        }
        op = match r.access {
            Access::Public => op.security(SecurityRequirement::default()),
            Access::Key => op
                .security(SecurityRequirement::new("apikey", Vec::<String>::new()))
                .security(SecurityRequirement::new("bearer", Vec::<String>::new())),
            Access::ServiceRole => op
                .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
                .description(Some("Requires the service_role key.")),
        };
        paths.add_path_operation(openapi_path(r.path), vec![method], op.build());
    }
    let components = ComponentsBuilder::new()
        .security_scheme(
            "apikey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("apikey"))),
        )
        .security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Fluxbase")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some("Fluxbase platform API. REST resources under /rest/v1 are described at GET /rest/v1/."))
                .build(),
        )
        .paths(paths)
        .components(Some(components))
        .build()
}
