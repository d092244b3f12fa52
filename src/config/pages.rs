//! The pages for people (`http::pages`): whether they are served, and where a page's `?next=`
//! may send the browser besides this server's own paths.

use super::values::{List, boolean, list, web_origin};

#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Pages")]
pub struct PagesConfig {
    /// Serve the HTML pages (sign-in, registration, password reset, email verification, the
    /// account page); false removes every page route and leaves the API as it is
    #[arg(
        long = "pages",
        env = "PAGES",
        value_name = "BOOL",
        default_value = "true",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = boolean
    )]
    pub enabled: bool,

    /// Comma-separated origins (https://app.example.com) a page's `?next=` may send the browser
    /// to after signing in, besides this server's own paths (default: none)
    #[arg(
        long = "pages-redirect-allowlist",
        env = "PAGES_REDIRECT_ALLOWLIST",
        value_name = "ORIGINS",
        default_value = "",
        hide_default_value = true,
        value_parser = list(web_origin)
    )]
    pub redirect_allowlist: List<String>,
}
