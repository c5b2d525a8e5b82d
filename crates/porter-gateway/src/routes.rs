//! Paths → handlers, and the middleware around them: the one place the gateway's HTTP surface
//! is assembled, used by `porter gateway`, `porter dev` and the tests alike.
//!
//! Each resource has a name, which is its `endpoint` label in `porter_http_requests_total`.

use actix_web::middleware::from_fn;
use actix_web::web;
use porter_core::policy::Policy;

use crate::handlers::{
    admin, admin_owners, admin_users, batch_authenticate, health, presence, publish, pusher_auth,
    revoke, scoped, sessions, user_auth,
};
use crate::http::limits::MAX_BODY;
use crate::middleware;

/// Registers every route of the gateway, including the policy's scoped-token endpoints,
/// inside the middleware stack (`crate::middleware` says which and in what order). The
/// app must carry a `web::Data<AppState>`.
pub fn configure(cfg: &mut web::ServiceConfig, policy: &Policy) {
    let mut scoped_routes = Vec::with_capacity(policy.endpoints().len());
    for (index, endpoint) in policy.endpoints().iter().enumerate() {
        scoped_routes.push(
            web::resource(endpoint.path.as_str())
                .name("scoped")
                .app_data(web::Data::new(scoped::EndpointIndex(index)))
                // The IP is charged before the token is looked at.
                .wrap(from_fn(middleware::rate_limit::rate_limit_first))
                .route(web::post().to(scoped::scoped_auth)),
        );
    }
    let mut all = web::scope("")
        .app_data(web::PayloadConfig::new(MAX_BODY))
        .service(
            web::resource("/pusher/batch-authenticate")
                .name("batch-authenticate")
                .route(web::get().to(batch_authenticate::batch_authenticate)),
        )
        .service(
            web::resource("/pusher/auth")
                .name("auth")
                .route(web::post().to(pusher_auth::pusher_auth)),
        )
        .service(
            web::resource("/pusher/user-auth")
                .name("user-auth")
                .route(web::post().to(user_auth::user_auth)),
        )
        .service(
            web::resource("/presence/heartbeat")
                .name("presence-heartbeat")
                .route(web::post().to(presence::heartbeat)),
        )
        .service(
            web::resource("/pusher/webhook")
                .name("webhook")
                .route(web::post().to(presence::webhook)),
        )
        .service(
            web::resource("/auth")
                .name("session")
                // The IP is charged before the token or email is looked at.
                .wrap(from_fn(middleware::rate_limit::rate_limit_first))
                .route(web::post().to(sessions::create)),
        )
        .service(
            web::resource("/apps/{app_id}/events")
                .name("publish-events")
                // The IP is charged before the signature is checked.
                .wrap(from_fn(middleware::rate_limit::rate_limit_first))
                .route(web::post().to(publish::events)),
        )
        .service(
            web::resource("/apps/{app_id}/batch_events")
                .name("publish-batch-events")
                .wrap(from_fn(middleware::rate_limit::rate_limit_first))
                .route(web::post().to(publish::batch_events)),
        )
        .service(admin_scope())
        .service(
            web::resource("/healthz")
                .name("healthz")
                .route(web::get().to(health::healthz)),
        )
        .service(
            web::resource("/readyz")
                .name("readyz")
                .route(web::get().to(health::readyz)),
        )
        .service(
            web::resource("/metrics")
                .name("metrics")
                .route(web::get().to(health::metrics)),
        );
    for route in scoped_routes {
        all = all.service(route);
    }
    cfg.service(
        all.wrap(from_fn(middleware::size_limit::size_limit))
            .wrap(from_fn(middleware::json_errors::json_errors))
            .wrap(from_fn(middleware::body_timeout::body_timeout))
            .wrap(from_fn(middleware::cors::cors))
            .wrap(from_fn(middleware::audit::audit))
            .wrap(from_fn(middleware::track::track)),
    );
}

/// `/admin`: rate limited by IP before the admin token is checked, then guarded, for every
/// route in it.
fn admin_scope() -> actix_web::Scope<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let channel = "/channels/{channel}";
    web::scope("/admin")
        .wrap(from_fn(middleware::admin::require_admin))
        .wrap(from_fn(middleware::rate_limit::rate_limit_first))
        .service(
            web::resource("/tokens/revoke")
                .name("admin-revoke")
                .route(web::post().to(revoke::revoke)),
        )
        .service(
            web::resource(format!("{channel}/members/{{user_id}}"))
                .name("admin-members")
                .route(web::put().to(admin::add_member))
                .route(web::delete().to(admin::remove_member)),
        )
        .service(
            web::resource(format!("{channel}/events/{{event}}"))
                .name("admin-event")
                .route(web::put().to(admin::set_event))
                .route(web::delete().to(admin::clear_event)),
        )
        .service(
            web::resource(format!("{channel}/events"))
                .name("admin-events")
                .route(web::delete().to(admin::clear_events)),
        )
        .service(
            web::resource(format!("{channel}/owner"))
                .name("admin-channel-owner")
                .route(web::get().to(admin_owners::get_owner))
                .route(web::put().to(admin_owners::put_owner))
                .route(web::delete().to(admin_owners::delete_owner)),
        )
        .service(
            web::resource("/users/{user_id}/info")
                .name("admin-user-info")
                .route(web::get().to(admin_users::get_info))
                .route(web::put().to(admin_users::put_info))
                .route(web::delete().to(admin_users::delete_info)),
        )
        .service(
            web::resource("/users/{user_id}/watchlist")
                .name("admin-user-watchlist")
                .route(web::get().to(admin_users::get_watchlist))
                .route(web::put().to(admin_users::put_watchlist))
                .route(web::delete().to(admin_users::delete_watchlist)),
        )
        .service(
            web::resource("/decision")
                .name("admin-decision")
                .route(web::get().to(admin::decision))
                .route(web::post().to(admin::decision_with_claims)),
        )
}
