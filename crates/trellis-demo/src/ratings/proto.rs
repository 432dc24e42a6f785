//! The `trellis.demo.Ratings` messages, written by hand in the form prost-build generates.

/// Asks for the rating of one catalog item.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RateRequest {
    /// The catalog item id, for example `"trellis"`; must not be empty.
    #[prost(string, tag = "1")]
    pub item: String,
}

/// The rating of one catalog item.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RateReply {
    /// The item id from the request.
    #[prost(string, tag = "1")]
    pub item: String,
    /// Between 1 and 5.
    #[prost(uint32, tag = "2")]
    pub stars: u32,
}
